//go:build !linux || race

package rawio

import "syscall"

// The race detector's build (and other systems) use the standard calls: they carry the
// detector's annotations.

func sysRead(fd int, p []byte) (int, error) {
	n, err := syscall.Read(fd, p)
	if err != nil {
		return 0, err
	}
	return n, nil
}

func sysWrite(fd int, p []byte) (int, error) {
	n, err := syscall.Write(fd, p)
	if err != nil {
		return 0, err
	}
	return n, nil
}
