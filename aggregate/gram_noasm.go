//go:build !amd64 || purego

package aggregate

const useGramAsm = false

func gramLanes4(x, y0, y1, y2, y3 *float32, n8 int, out *[32]float64) {
	panic("aggregate: gramLanes4 without the assembly kernel")
}

func dotLanes3264(x *float32, v *float64, n8 int, out *[8]float64) {
	panic("aggregate: dotLanes3264 without the assembly kernel")
}

func axpy3264(v *float64, x *float32, a float64, n4 int) {
	panic("aggregate: axpy3264 without the assembly kernel")
}

func sqLanes64(v *float64, n8 int, out *[8]float64) {
	panic("aggregate: sqLanes64 without the assembly kernel")
}
