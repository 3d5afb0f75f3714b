package sim

// byteTotals is a run's running sums of the bytes that cross the network,
// for the cumulative fields of Metrics.
type byteTotals struct {
	total, dense int64
}

// addTotals sets m's total fields from its upload and download fields and
// the rounds before it (t), and adds m to t.
func (t *byteTotals) addTotals(m *Metrics) {
	m.TotalBytes = m.UploadBytes + m.DownloadBytes
	m.DenseTotalBytes = m.DenseUploadBytes + m.DenseDownloadBytes
	t.total += m.TotalBytes
	t.dense += m.DenseTotalBytes
	m.CumulativeTotalBytes = t.total
	if t.total > 0 {
		m.TotalRatio = float64(t.dense) / float64(t.total)
	}
}
