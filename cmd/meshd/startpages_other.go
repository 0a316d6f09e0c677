//go:build !linux

package main

// releaseStartupPages is Linux only (startpages_linux.go).
func releaseStartupPages() (int, error) { return 0, nil }
