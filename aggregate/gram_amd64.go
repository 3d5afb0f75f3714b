//go:build !purego

package aggregate

import "golang.org/x/sys/cpu"

// useGramAsm selects gram_amd64.s's kernel (AVX). It adds every lane in
// the order gramLanesGo does, so it changes speed, not bits; build with
// the purego tag, or set it to false in a test, for the portable kernel.
var useGramAsm = cpu.X86.HasAVX

//go:noescape
func gramLanes4(x, y0, y1, y2, y3 *float32, n8 int, out *[32]float64)

//go:noescape
func dotLanes3264(x *float32, v *float64, n8 int, out *[8]float64)

//go:noescape
func axpy3264(v *float64, x *float32, a float64, n4 int)

//go:noescape
func sqLanes64(v *float64, n8 int, out *[8]float64)
