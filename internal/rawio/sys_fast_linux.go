//go:build !race

package rawio

func sysRead(fd int, p []byte) (int, error)  { return rawRead(fd, p) }
func sysWrite(fd int, p []byte) (int, error) { return rawWrite(fd, p) }
