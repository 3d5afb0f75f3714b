//go:build !purego

#include "textflag.h"

// PAIR multiplies the float32 values at PTR (8 of them, from AX),
// widened to float64, by x's (Y8: lanes 0-3, Y9: lanes 4-7) and adds the
// products to the lane sums LO and HI. The products of float32 values
// are exact in float64, so each lane's sum is rounded only by its adds,
// in coordinate order, as gramLanesGo does.
#define PAIR(PTR, LO, HI) \
	VCVTPS2PD (PTR)(AX*4), Y10 \
	VCVTPS2PD 16(PTR)(AX*4), Y11 \
	VMULPD Y8, Y10, Y10 \
	VMULPD Y9, Y11, Y11 \
	VADDPD Y10, LO, LO \
	VADDPD Y11, HI, HI

// func gramLanes4(x, y0, y1, y2, y3 *float32, n8 int, out *[32]float64)
//
// out[8p + l] = Σ_{c < n8, c mod 8 = l} x[c]·y_p[c], in order of c; n8 is
// a multiple of 8.
TEXT ·gramLanes4(SB), NOSPLIT, $0-56
	MOVQ x+0(FP), SI
	MOVQ y0+8(FP), R8
	MOVQ y1+16(FP), R9
	MOVQ y2+24(FP), R10
	MOVQ y3+32(FP), R11
	MOVQ n8+40(FP), CX
	MOVQ out+48(FP), DI
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	VXORPD Y4, Y4, Y4
	VXORPD Y5, Y5, Y5
	VXORPD Y6, Y6, Y6
	VXORPD Y7, Y7, Y7
	XORQ AX, AX

loop:
	CMPQ AX, CX
	JGE  done
	VCVTPS2PD (SI)(AX*4), Y8
	VCVTPS2PD 16(SI)(AX*4), Y9
	PAIR(R8, Y0, Y1)
	PAIR(R9, Y2, Y3)
	PAIR(R10, Y4, Y5)
	PAIR(R11, Y6, Y7)
	ADDQ $8, AX
	JMP  loop

done:
	VMOVUPD Y0, 0(DI)
	VMOVUPD Y1, 32(DI)
	VMOVUPD Y2, 64(DI)
	VMOVUPD Y3, 96(DI)
	VMOVUPD Y4, 128(DI)
	VMOVUPD Y5, 160(DI)
	VMOVUPD Y6, 192(DI)
	VMOVUPD Y7, 224(DI)
	VZEROUPPER
	RET

// func dotLanes3264(x *float32, v *float64, n8 int, out *[8]float64)
//
// out[l] = Σ_{c < n8, c mod 8 = l} x[c]·v[c], in order of c, rounded as
// Go's float64(float64(x[c])*v[c]) then +=.
TEXT ·dotLanes3264(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ v+8(FP), DX
	MOVQ n8+16(FP), CX
	MOVQ out+24(FP), DI
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	XORQ AX, AX

dloop:
	CMPQ AX, CX
	JGE  ddone
	VCVTPS2PD (SI)(AX*4), Y8
	VCVTPS2PD 16(SI)(AX*4), Y9
	VMULPD (DX)(AX*8), Y8, Y8
	VMULPD 32(DX)(AX*8), Y9, Y9
	VADDPD Y8, Y0, Y0
	VADDPD Y9, Y1, Y1
	ADDQ $8, AX
	JMP  dloop

ddone:
	VMOVUPD Y0, 0(DI)
	VMOVUPD Y1, 32(DI)
	VZEROUPPER
	RET

// func axpy3264(v *float64, x *float32, a float64, n4 int)
//
// v[c] += a·x[c] for c < n4 (a multiple of 4), each product rounded
// before the add, as Go's v[c] += float64(a*float64(x[c])).
TEXT ·axpy3264(SB), NOSPLIT, $0-32
	MOVQ v+0(FP), DI
	MOVQ x+8(FP), SI
	VBROADCASTSD a+16(FP), Y7
	MOVQ n4+24(FP), CX
	XORQ AX, AX

aloop:
	CMPQ AX, CX
	JGE  adone
	VCVTPS2PD (SI)(AX*4), Y8
	VMULPD Y7, Y8, Y8
	VADDPD (DI)(AX*8), Y8, Y8
	VMOVUPD Y8, (DI)(AX*8)
	ADDQ $4, AX
	JMP  aloop

adone:
	VZEROUPPER
	RET

// func sqLanes64(v *float64, n8 int, out *[8]float64)
//
// out[l] = Σ_{c < n8, c mod 8 = l} v[c]·v[c], in order of c, each square
// rounded before the add, as Go's += float64(v[c]*v[c]).
TEXT ·sqLanes64(SB), NOSPLIT, $0-24
	MOVQ v+0(FP), SI
	MOVQ n8+8(FP), CX
	MOVQ out+16(FP), DI
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	XORQ AX, AX

sloop:
	CMPQ AX, CX
	JGE  sdone
	VMOVUPD (SI)(AX*8), Y8
	VMOVUPD 32(SI)(AX*8), Y9
	VMULPD Y8, Y8, Y8
	VMULPD Y9, Y9, Y9
	VADDPD Y8, Y0, Y0
	VADDPD Y9, Y1, Y1
	ADDQ $8, AX
	JMP  sloop

sdone:
	VMOVUPD Y0, 0(DI)
	VMOVUPD Y1, 32(DI)
	VZEROUPPER
	RET
