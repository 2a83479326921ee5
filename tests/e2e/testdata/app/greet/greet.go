// Package greet builds greetings; pure Go.
package greet

import "strconv"

// Hello returns a greeting for name, repeated n times.
func Hello(name string, n int) string {
	s := ""
	for i := 0; i < n; i++ {
		if i > 0 {
			s += " "
		}
		s += "hello, " + name
	}
	return s + " (" + strconv.Itoa(n) + ")"
}
