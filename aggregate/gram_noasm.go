//go:build !amd64 || purego

package aggregate

const useGramAsm = false

func gramLanes4(x, y0, y1, y2, y3 *float32, n8 int, out *[32]float64) {
	panic("aggregate: gramLanes4 without the assembly kernel")
}
