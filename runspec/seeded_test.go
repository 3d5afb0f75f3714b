package runspec

import (
	"errors"
	"testing"
)

// TestSeededDownloadNeedsRandomSupport: a seeded download codec is
// refused without secure aggregation and with an announced support (its
// keys would name nothing), and accepted with a random support; the
// default codec becomes seeded only under a random support.
func TestSeededDownloadNeedsRandomSupport(t *testing.T) {
	secagg := func(support string) *SecAgg { return &SecAgg{Fraction: 0.01, Bits: 12, Support: support} }
	for _, tc := range []struct {
		codec string
		sa    *SecAgg
		ok    bool
	}{
		{"seeded", nil, false},
		{"topk=0.02,bits=lattice,support=seeded", nil, false},
		{"seeded", secagg("announced"), false},
		{"seeded", secagg(""), true},
		{"seeded", secagg("random"), true},
		{"lattice", secagg("announced"), true},
	} {
		s := good()
		s.DownloadCodec, s.SecAgg = tc.codec, tc.sa
		if tc.sa != nil {
			s.UploadCodec, s.Strategy = "", SecAggStrategy(DefaultStrategy)
		}
		err := s.Validate()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s with secagg %+v: %v, want ok %v", tc.codec, tc.sa, err, tc.ok)
		}
	}
	if err := CheckUploadCodec("seeded"); err == nil {
		t.Error("seeded accepted as an upload codec")
	}
	for _, tc := range []struct {
		codec string
		sa    *SecAgg
		want  string
	}{
		{DefaultDownloadCodec, secagg("random"), SeededDownloadCodec},
		{DefaultDownloadCodec, secagg(""), SeededDownloadCodec},
		{DefaultDownloadCodec, secagg("announced"), DefaultDownloadCodec},
		{DefaultDownloadCodec, nil, DefaultDownloadCodec},
		{"topk=0.02,bits=lattice,step=2,levels=7", secagg("random"), "topk=0.02,bits=lattice,step=2,levels=7"},
		{"none", secagg("random"), "none"},
	} {
		if got := SecAggDownloadCodec(tc.codec, tc.sa); got != tc.want {
			t.Errorf("SecAggDownloadCodec(%q, %+v) = %q, want %q", tc.codec, tc.sa, got, tc.want)
		}
	}
}
