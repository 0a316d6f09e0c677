//go:build race

package proxy

// raceOn: built with -race, where sync.Pool drops some of what it is given on purpose.
const raceOn = true
