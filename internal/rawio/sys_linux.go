package rawio

import (
	"syscall"
	"unsafe"
)

// rawRead and rawWrite are recvfrom(2) and sendto(2) without entersyscall (see the
// package comment). The builds without the race detector use them (sys_fast_linux.go);
// the tests call them directly so that they run under the race detector's build too.
//
// Why not read(2) and write(2): the descriptors are always sockets (Init takes raw calls
// only for a *net.TCPConn), and the socket calls skip the VFS layer that read and write
// pass through on the way to the same sock_recvmsg and sock_sendmsg (fdget_pos,
// rw_verify_area, the iov_iter set-up, fsnotify). HAProxy uses them for the same reason.
// MSG_NOSIGNAL: a write to a connection the peer reset fails with EPIPE without the
// kernel raising SIGPIPE first (the runtime would ignore it, after handling it).

func rawRead(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func rawWrite(fd int, p []byte) (int, error) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)), syscall.MSG_NOSIGNAL, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}
