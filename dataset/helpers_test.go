package dataset

import (
	"runtime"
	"strconv"
)

type runtimeMem struct{ total uint64 }

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.total = s.TotalAlloc
}

func strconvFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
