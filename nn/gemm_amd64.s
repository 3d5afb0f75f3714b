//go:build !purego

#include "textflag.h"

// Tails of the bcast kernels: Y14 holds alpha and Y15 beta; BX is zero
// when beta is ±0, in which case C is written without being read.
#define LOADAB \
	VBROADCASTSS alpha+64(FP), Y14 \
	VBROADCASTSS beta+68(FP), Y15 \
	MOVL beta+68(FP), BX \
	ANDL $0x7fffffff, BX

#define LOADAB1 \
	VBROADCASTSS alpha+48(FP), Y14 \
	VBROADCASTSS beta+52(FP), Y15 \
	MOVL beta+52(FP), BX \
	ANDL $0x7fffffff, BX

#define OVER(Y, PTR) \
	VMULPS Y14, Y, Y \
	VMOVUPS Y, PTR

#define ACC(Y, PTR) \
	VMULPS Y14, Y, Y \
	VFMADD231PS PTR, Y15, Y \
	VMOVUPS Y, PTR


// func dot2x4(a *float32, lda int, b *float32, ldb int, k8 int, out *[8]float32)
//
// out[r*4+c] = Σ_{p<k8} a[r*lda+p]·b[c*ldb+p] for r < 2, c < 4. k8 is a
// positive multiple of 8. Requires AVX2 and FMA.
TEXT ·dot2x4(SB), NOSPLIT, $0-48
	MOVQ a+0(FP), SI
	MOVQ lda+8(FP), R8
	MOVQ b+16(FP), DI
	MOVQ ldb+24(FP), R9
	MOVQ k8+32(FP), CX
	MOVQ out+40(FP), DX
	SHLQ $2, R8
	SHLQ $2, R9
	SHLQ $2, CX
	LEAQ (SI)(R8*1), R10
	LEAQ (DI)(R9*1), R12
	LEAQ (R12)(R9*1), R13
	LEAQ (R13)(R9*1), R14
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	XORQ AX, AX

loop2x4:
	VMOVUPS (SI)(AX*1), Y8
	VMOVUPS (R10)(AX*1), Y9
	VMOVUPS (DI)(AX*1), Y10
	VFMADD231PS Y10, Y8, Y0
	VFMADD231PS Y10, Y9, Y4
	VMOVUPS (R12)(AX*1), Y11
	VFMADD231PS Y11, Y8, Y1
	VFMADD231PS Y11, Y9, Y5
	VMOVUPS (R13)(AX*1), Y12
	VFMADD231PS Y12, Y8, Y2
	VFMADD231PS Y12, Y9, Y6
	VMOVUPS (R14)(AX*1), Y13
	VFMADD231PS Y13, Y8, Y3
	VFMADD231PS Y13, Y9, Y7
	ADDQ $32, AX
	CMPQ AX, CX
	JLT  loop2x4

	// Reduce each accumulator to one float. Pairwise: Y0..Y3 hold row 0.
	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVUPS X0, (DX)
	VHADDPS Y5, Y4, Y4
	VHADDPS Y7, Y6, Y6
	VHADDPS Y6, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPS X5, X4, X4
	VMOVUPS X4, 16(DX)
	VZEROUPPER
	RET

// func dot1x4(a *float32, b *float32, ldb int, k8 int, out *[4]float32)
TEXT ·dot1x4(SB), NOSPLIT, $0-40
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ ldb+16(FP), R9
	MOVQ k8+24(FP), CX
	MOVQ out+32(FP), DX
	SHLQ $2, R9
	SHLQ $2, CX
	LEAQ (DI)(R9*1), R12
	LEAQ (R12)(R9*1), R13
	LEAQ (R13)(R9*1), R14
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	XORQ AX, AX

loop1x4:
	VMOVUPS (SI)(AX*1), Y8
	VFMADD231PS (DI)(AX*1), Y8, Y0
	VFMADD231PS (R12)(AX*1), Y8, Y1
	VFMADD231PS (R13)(AX*1), Y8, Y2
	VFMADD231PS (R14)(AX*1), Y8, Y3
	ADDQ $32, AX
	CMPQ AX, CX
	JLT  loop1x4

	VHADDPS Y1, Y0, Y0
	VHADDPS Y3, Y2, Y2
	VHADDPS Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VMOVUPS X0, (DX)
	VZEROUPPER
	RET

// func bcast4x16(a *float32, ars, aps int, b *float32, ldb int, k int, c *float32, ldc int, alpha, beta float32)
//
// c[r*ldc+j] = beta·c[r*ldc+j] + alpha·Σ_{p<k} a[r*ars+p*aps]·b[p*ldb+j] for
// r < 4, j < 16; k > 0. When beta is zero, c is not read.
TEXT ·bcast4x16(SB), NOSPLIT, $0-72
	MOVQ a+0(FP), SI
	MOVQ ars+8(FP), R8
	MOVQ aps+16(FP), R9
	MOVQ b+24(FP), DI
	MOVQ ldb+32(FP), R11
	MOVQ k+40(FP), CX
	MOVQ c+48(FP), DX
	MOVQ ldc+56(FP), R12
	SHLQ $2, R8
	SHLQ $2, R9
	SHLQ $2, R11
	SHLQ $2, R12
	LEAQ (R8)(R8*2), R10
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

loop4x16:
	VMOVUPS (DI), Y12
	VMOVUPS 32(DI), Y13
	VBROADCASTSS (SI), Y8
	VFMADD231PS Y12, Y8, Y0
	VFMADD231PS Y13, Y8, Y1
	VBROADCASTSS (SI)(R8*1), Y9
	VFMADD231PS Y12, Y9, Y2
	VFMADD231PS Y13, Y9, Y3
	VBROADCASTSS (SI)(R8*2), Y10
	VFMADD231PS Y12, Y10, Y4
	VFMADD231PS Y13, Y10, Y5
	VBROADCASTSS (SI)(R10*1), Y11
	VFMADD231PS Y12, Y11, Y6
	VFMADD231PS Y13, Y11, Y7
	ADDQ R9, SI
	ADDQ R11, DI
	DECQ CX
	JNZ  loop4x16

	LOADAB
	TESTL BX, BX
	JNZ  acc4x16
	OVER(Y0, (DX))
	OVER(Y1, 32(DX))
	ADDQ R12, DX
	OVER(Y2, (DX))
	OVER(Y3, 32(DX))
	ADDQ R12, DX
	OVER(Y4, (DX))
	OVER(Y5, 32(DX))
	ADDQ R12, DX
	OVER(Y6, (DX))
	OVER(Y7, 32(DX))
	VZEROUPPER
	RET

acc4x16:
	ACC(Y0, (DX))
	ACC(Y1, 32(DX))
	ADDQ R12, DX
	ACC(Y2, (DX))
	ACC(Y3, 32(DX))
	ADDQ R12, DX
	ACC(Y4, (DX))
	ACC(Y5, 32(DX))
	ADDQ R12, DX
	ACC(Y6, (DX))
	ACC(Y7, 32(DX))
	VZEROUPPER
	RET

// func bcast4x8(a *float32, ars, aps int, b *float32, ldb int, k int, c *float32, ldc int, alpha, beta float32)
TEXT ·bcast4x8(SB), NOSPLIT, $0-72
	MOVQ a+0(FP), SI
	MOVQ ars+8(FP), R8
	MOVQ aps+16(FP), R9
	MOVQ b+24(FP), DI
	MOVQ ldb+32(FP), R11
	MOVQ k+40(FP), CX
	MOVQ c+48(FP), DX
	MOVQ ldc+56(FP), R12
	SHLQ $2, R8
	SHLQ $2, R9
	SHLQ $2, R11
	SHLQ $2, R12
	LEAQ (R8)(R8*2), R10
	VXORPS Y0, Y0, Y0
	VXORPS Y2, Y2, Y2
	VXORPS Y4, Y4, Y4
	VXORPS Y6, Y6, Y6

loop4x8:
	VMOVUPS (DI), Y12
	VBROADCASTSS (SI), Y8
	VFMADD231PS Y12, Y8, Y0
	VBROADCASTSS (SI)(R8*1), Y9
	VFMADD231PS Y12, Y9, Y2
	VBROADCASTSS (SI)(R8*2), Y10
	VFMADD231PS Y12, Y10, Y4
	VBROADCASTSS (SI)(R10*1), Y11
	VFMADD231PS Y12, Y11, Y6
	ADDQ R9, SI
	ADDQ R11, DI
	DECQ CX
	JNZ  loop4x8

	LOADAB
	TESTL BX, BX
	JNZ  acc4x8
	OVER(Y0, (DX))
	ADDQ R12, DX
	OVER(Y2, (DX))
	ADDQ R12, DX
	OVER(Y4, (DX))
	ADDQ R12, DX
	OVER(Y6, (DX))
	VZEROUPPER
	RET

acc4x8:
	ACC(Y0, (DX))
	ADDQ R12, DX
	ACC(Y2, (DX))
	ADDQ R12, DX
	ACC(Y4, (DX))
	ADDQ R12, DX
	ACC(Y6, (DX))
	VZEROUPPER
	RET

// func bcast1x16(a *float32, aps int, b *float32, ldb int, k int, c *float32, alpha, beta float32)
TEXT ·bcast1x16(SB), NOSPLIT, $0-56
	MOVQ a+0(FP), SI
	MOVQ aps+8(FP), R9
	MOVQ b+16(FP), DI
	MOVQ ldb+24(FP), R11
	MOVQ k+32(FP), CX
	MOVQ c+40(FP), DX
	SHLQ $2, R9
	SHLQ $2, R11
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1

loop1x16:
	VBROADCASTSS (SI), Y8
	VFMADD231PS (DI), Y8, Y0
	VFMADD231PS 32(DI), Y8, Y1
	ADDQ R9, SI
	ADDQ R11, DI
	DECQ CX
	JNZ  loop1x16

	LOADAB1
	TESTL BX, BX
	JNZ  acc1x16
	OVER(Y0, (DX))
	OVER(Y1, 32(DX))
	VZEROUPPER
	RET

acc1x16:
	ACC(Y0, (DX))
	ACC(Y1, 32(DX))
	VZEROUPPER
	RET

// func bcast1x8(a *float32, aps int, b *float32, ldb int, k int, c *float32, alpha, beta float32)
TEXT ·bcast1x8(SB), NOSPLIT, $0-56
	MOVQ a+0(FP), SI
	MOVQ aps+8(FP), R9
	MOVQ b+16(FP), DI
	MOVQ ldb+24(FP), R11
	MOVQ k+32(FP), CX
	MOVQ c+40(FP), DX
	SHLQ $2, R9
	SHLQ $2, R11
	VXORPS Y0, Y0, Y0

loop1x8:
	VBROADCASTSS (SI), Y8
	VFMADD231PS (DI), Y8, Y0
	ADDQ R9, SI
	ADDQ R11, DI
	DECQ CX
	JNZ  loop1x8

	LOADAB1
	TESTL BX, BX
	JNZ  acc1x8
	OVER(Y0, (DX))
	VZEROUPPER
	RET

acc1x8:
	ACC(Y0, (DX))
	VZEROUPPER
	RET

// func biasReLU8(dst, src *float32, n8 int, bias float32)
//
// dst[i] = max(src[i]+bias, 0) for i < n8, a positive multiple of 8, with
// Go's max: +0 for zero and negative sums, NaN for NaN. Requires AVX2.
TEXT ·biasReLU8(SB), NOSPLIT, $0-28
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n8+16(FP), CX
	VBROADCASTSS bias+24(FP), Y1
	VXORPS Y15, Y15, Y15
	SHLQ $2, CX
	XORQ AX, AX

loopbr:
	VADDPS (SI)(AX*1), Y1, Y0
	VMAXPS Y15, Y0, Y2
	VCMPPS $3, Y0, Y0, Y3
	VBLENDVPS Y3, Y0, Y2, Y2
	VMOVUPS Y2, (DI)(AX*1)
	ADDQ $32, AX
	CMPQ AX, CX
	JLT  loopbr
	VZEROUPPER
	RET
