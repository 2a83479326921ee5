// Package cmath adds numbers in C, through cgo.
package cmath

/*
static int cmath_add(int a, int b) { return a + b; }
*/
import "C"

// Add returns a + b, computed by a C function.
func Add(a, b int) int {
	return int(C.cmath_add(C.int(a), C.int(b)))
}
