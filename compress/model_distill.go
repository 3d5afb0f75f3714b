package compress

import (
	"fmt"
	"math"
)

// Knowledge distillation (Hinton, Vinyals and Dean 2015): a small student
// learns from the logits of a large teacher softened by a temperature T,
// with the loss per example
//
//	alpha·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha)·CE(softmax(s), y)
//
// where s are the student's logits, t the teacher's and y the true label.
// The factor T² keeps the soft term's gradient on the scale of the hard
// term's as T varies. Its gradient with respect to the student's logits is
//
//	alpha·T·(softmax(s/T) − softmax(t/T)) + (1 − alpha)·(softmax(s) − onehot(y)).

// SoftTargets writes softmax(logits/T) of each row of classes logits to dst.
// It panics if the lengths differ, classes does not divide them, or T <= 0.
func SoftTargets(dst, logits []float32, classes int, T float32) {
	if len(dst) != len(logits) || classes <= 0 || len(logits)%classes != 0 {
		panic("compress: SoftTargets: bad lengths")
	}
	if !(T > 0) {
		panic(fmt.Sprintf("compress: SoftTargets: temperature %v", T))
	}
	for r := 0; r < len(logits); r += classes {
		softmaxT(dst[r:r+classes], logits[r:r+classes], T)
	}
}

// softmaxT writes softmax(z/T) to dst and returns log of its normaliser
// minus max(z)/T: log Σ exp((z−max)/T).
func softmaxT(dst, z []float32, T float32) float64 {
	mx := z[0]
	for _, v := range z[1:] {
		mx = max(mx, v)
	}
	inv := 1 / float64(T)
	var sum float64
	for j, v := range z {
		e := math.Exp(float64(v-mx) * inv)
		dst[j] = float32(e)
		sum += e
	}
	for j := range dst {
		dst[j] = float32(float64(dst[j]) / sum)
	}
	return math.Log(sum)
}

// DistillLoss computes the distillation loss of a batch of n = len(labels)
// examples with the given number of classes: student and teacher hold n
// rows of logits, soft (optional, may be nil) the teacher's precomputed
// SoftTargets at temperature T. It writes to grad (n rows) the gradient of
// the loss with respect to the student's logits times scale (1/n for the
// mean over the batch) and returns the summed, unscaled loss. alpha = 0 is
// plain cross-entropy. It panics on mismatched lengths, T <= 0 or alpha
// outside [0, 1].
func DistillLoss(grad, student, teacher, soft []float32, labels []uint8, classes int, T, alpha, scale float32) float64 {
	n := len(labels)
	if len(grad) != n*classes || len(student) != n*classes || (teacher != nil && len(teacher) != n*classes) ||
		(soft != nil && len(soft) != n*classes) || (teacher == nil && soft == nil && alpha != 0) {
		panic("compress: DistillLoss: bad lengths")
	}
	if !(T > 0) || !(alpha >= 0 && alpha <= 1) {
		panic(fmt.Sprintf("compress: DistillLoss: T %v, alpha %v", T, alpha))
	}
	var pt [256]float32
	var ps [256]float32
	if classes > len(pt) {
		panic("compress: DistillLoss: more than 256 classes")
	}
	var loss float64
	for i := 0; i < n; i++ {
		s := student[i*classes : (i+1)*classes]
		g := grad[i*classes : (i+1)*classes]
		y := int(labels[i])
		// Hard term: softmax(s) − onehot(y).
		lse := softmaxT(g, s, 1)
		mx := s[0]
		for _, v := range s[1:] {
			mx = max(mx, v)
		}
		hard := lse - float64(s[y]-mx)
		for j := range g {
			g[j] *= 1 - alpha
		}
		g[y] -= 1 - alpha
		loss += float64(1-alpha) * hard
		if alpha > 0 {
			q := pt[:classes]
			if soft != nil {
				copy(q, soft[i*classes:(i+1)*classes])
			} else {
				softmaxT(q, teacher[i*classes:(i+1)*classes], T)
			}
			p := ps[:classes]
			lseS := softmaxT(p, s, T)
			// KL(q‖p) = Σ q (log q − log p), log p_j = (s_j − mx)/T − lseS.
			var kl float64
			for j := range p {
				if q[j] > 0 {
					logp := float64(s[j]-mx)/float64(T) - lseS
					kl += float64(q[j]) * (math.Log(float64(q[j])) - logp)
				}
				g[j] += alpha * T * (p[j] - q[j])
			}
			loss += float64(alpha) * float64(T) * float64(T) * kl
		}
		for j := range g {
			g[j] *= scale
		}
	}
	return loss
}
