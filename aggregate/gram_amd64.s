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
