//go:build !linux

package listen

import (
	"errors"
	"time"
)

// Parker parks idle connections on Linux only (park_linux.go); elsewhere NewParker
// fails and idle connections keep their goroutine.
type Parker struct{ Now func() time.Time }

// NewParker reports errors.ErrUnsupported off Linux.
func NewParker(onSettle func()) (*Parker, error) { return nil, errors.ErrUnsupported }

func (p *Parker) Len() int                                               { return 0 }
func (p *Parker) Close()                                                 {}
func (p *Parker) park(c *Conn, expire time.Time, resume func(Wake)) bool { return false }
func (p *Parker) unpark(c *Conn, why Wake) bool                          { return false }
