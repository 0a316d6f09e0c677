package accesslog

import (
	"strconv"
	"time"
)

// defaultTimeLayout is Envoy's %START_TIME% format.
const defaultTimeLayout = "%Y-%m-%dT%H:%M:%S.%3fZ"

// timeFormat is a compiled strftime layout. Times are formatted in UTC, as Envoy does.
type timeFormat struct {
	toks []timeTok
}

type timeTok struct {
	spec byte   // 0 for a literal
	lit  string // the literal (JSON-escaped when compiled for a JSON value)
	n    int    // digits of %f
}

// compileTime compiles a START_TIME layout, or says why it cannot.
func compileTime(layout string, json bool) (*timeFormat, string) {
	tf := &timeFormat{}
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			s := string(lit)
			if json {
				s = string(appendJSONEscaped(nil, s))
			}
			tf.toks = append(tf.toks, timeTok{lit: s})
			lit = lit[:0]
		}
	}
	for i := 0; i < len(layout); i++ {
		c := layout[i]
		if c != '%' {
			lit = append(lit, c)
			continue
		}
		i++
		if i == len(layout) {
			return nil, "the time format ends in a lone %"
		}
		spec := layout[i]
		n := 0
		if spec >= '1' && spec <= '9' && i+1 < len(layout) && layout[i+1] == 'f' {
			n = int(spec - '0')
			i++
			spec = 'f'
		} else if spec == 'f' {
			n = 9
		}
		switch spec {
		case '%':
			lit = append(lit, '%')
			continue
		case 'Y', 'm', 'd', 'H', 'M', 'S', 's', 'z', 'Z', 'j', 'a', 'b', 'f':
		default:
			return nil, "unsupported time specifier %" + string(layout[i]) + " (supported: %Y %m %d %H %M %S %s %z %Z %j %a %b %f %1f..%9f %%)"
		}
		flush()
		tf.toks = append(tf.toks, timeTok{spec: spec, n: n})
	}
	flush()
	return tf, ""
}

var pow10 = [...]int{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000}

// append formats t (in UTC) by the layout.
func (tf *timeFormat) append(b []byte, t time.Time) []byte {
	t = t.UTC()
	for _, k := range tf.toks {
		switch k.spec {
		case 0:
			b = append(b, k.lit...)
		case 'Y':
			b = appendPadded(b, t.Year(), 4)
		case 'm':
			b = appendPadded(b, int(t.Month()), 2)
		case 'd':
			b = appendPadded(b, t.Day(), 2)
		case 'H':
			b = appendPadded(b, t.Hour(), 2)
		case 'M':
			b = appendPadded(b, t.Minute(), 2)
		case 'S':
			b = appendPadded(b, t.Second(), 2)
		case 's':
			b = strconv.AppendInt(b, t.Unix(), 10)
		case 'z':
			b = append(b, "+0000"...)
		case 'Z':
			b = append(b, "UTC"...)
		case 'j':
			b = appendPadded(b, t.YearDay(), 3)
		case 'a':
			b = append(b, t.Weekday().String()[:3]...)
		case 'b':
			b = append(b, t.Month().String()[:3]...)
		case 'f':
			b = appendPadded(b, t.Nanosecond()/pow10[9-k.n], k.n)
		}
	}
	return b
}

// appendPadded appends n in decimal with at least width digits (zero-padded).
func appendPadded(b []byte, n, width int) []byte {
	if n < 0 {
		b = append(b, '-')
		n = -n
	}
	var buf [20]byte
	i := len(buf)
	for n >= 10 {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	buf[i] = byte('0' + n)
	for d := len(buf) - i; d < width; d++ {
		b = append(b, '0')
	}
	return append(b, buf[i:]...)
}
