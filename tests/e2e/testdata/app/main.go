// Command app prints a greeting and a sum computed in C.
package main

import (
	"os"
	"strconv"

	"example.com/app/cmath"
	"example.com/app/greet"
)

func main() {
	os.Stdout.WriteString(greet.Hello("cacheprog", 1) + "\n")
	os.Stdout.WriteString("2+3=" + strconv.Itoa(cmath.Add(2, 3)) + "\n")
}
