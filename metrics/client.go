package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Client holds a training client's metrics. Its methods may be called
// concurrently; a nil *Client ignores every call.
type Client struct {
	round, loss, ratio      prometheus.Gauge
	accepted, retries       prometheus.Counter
	refused                 *prometheus.CounterVec
	bytes                   *prometheus.CounterVec
	download, train, encode prometheus.Histogram
	upload                  prometheus.Histogram

	// codecs are the codec labels in use (see label).
	mu     sync.Mutex
	codecs map[string]bool
}

// maxCodecLabels bounds the distinct codec labels of a client's byte
// counter: the codec strings come from the coordinator's tasks.
const maxCodecLabels = 8

// label returns codec as a label, or "other" once maxCodecLabels others
// are in use.
func (m *Client) label(codec string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.codecs[codec] {
		if len(m.codecs) >= maxCodecLabels {
			return "other"
		}
		if m.codecs == nil {
			m.codecs = make(map[string]bool)
		}
		m.codecs[codec] = true
	}
	return codec
}

// NewClient registers a client's metrics on reg (NewRegistry).
func NewClient(reg *prometheus.Registry) *Client {
	m := &Client{}
	m.round = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_client_round", Help: "Round of the client's last accepted update."})
	m.loss = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_client_train_loss", Help: "Mean local training loss of the client's last update."})
	m.ratio = prometheus.NewGauge(prometheus.GaugeOpts{Name: "fedzip_client_compression_ratio", Help: "Dense float32 size of the last update over its encoded size."})
	m.accepted = prometheus.NewCounter(prometheus.CounterOpts{Name: "fedzip_client_updates_accepted_total", Help: "Updates the coordinator acknowledged."})
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{Name: "fedzip_client_retries_total", Help: "Failed calls the client backed off from and retried."})
	m.refused = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedzip_client_updates_refused_total",
		Help: "Updates the coordinator refused for good, by gRPC code."}, []string{"reason"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fedzip_client_bytes_total",
		Help: "Payload bytes of models downloaded (direction in, codec float32 for whole models, the download codec for deltas) and updates uploaded (direction out, codec: the upload codec); beyond 8 codecs, codec other."},
		[]string{"direction", "codec"})
	hist := func(name, help string) prometheus.Histogram {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: latencyBuckets})
	}
	m.download = hist("fedzip_client_download_seconds", "Time to download the global model.")
	m.train = hist("fedzip_client_train_seconds", "Time of local training.")
	m.encode = hist("fedzip_client_encode_seconds", "Time to compress the update.")
	m.upload = hist("fedzip_client_upload_seconds", "Time to upload an update, first chunk to acknowledgment.")
	reg.MustRegister(m.round, m.loss, m.ratio, m.accepted, m.retries, m.refused, m.bytes, m.download, m.train, m.encode, m.upload)
	return m
}

// Downloaded records a whole-model download of n bytes that took d.
func (m *Client) Downloaded(n int, d time.Duration) { m.DownloadedCodec("float32", n, d) }

// DownloadedCodec records a model download of n bytes in codec ("float32"
// for a whole model, the download codec for deltas) that took d.
func (m *Client) DownloadedCodec(codec string, n int, d time.Duration) {
	if m == nil {
		return
	}
	m.bytes.WithLabelValues(In, m.label(codec)).Add(float64(n))
	m.download.Observe(d.Seconds())
}

// Trained records local training that took train and the compression of its
// update, dense bytes into payload bytes, that took encode.
func (m *Client) Trained(train, encode time.Duration, loss float64, dense, payload int) {
	if m == nil {
		return
	}
	m.train.Observe(train.Seconds())
	m.encode.Observe(encode.Seconds())
	m.loss.Set(loss)
	if payload > 0 {
		m.ratio.Set(float64(dense) / float64(payload))
	}
}

// Uploaded records an accepted upload of n bytes in codec that took d.
func (m *Client) Uploaded(round uint64, codec string, n int, d time.Duration) {
	if m == nil {
		return
	}
	m.accepted.Inc()
	m.round.Set(float64(round))
	m.bytes.WithLabelValues(Out, m.label(codec)).Add(float64(n))
	m.upload.Observe(d.Seconds())
}

// Refused counts an update the coordinator refused for good.
func (m *Client) Refused(reason string) {
	if m == nil {
		return
	}
	m.refused.WithLabelValues(reason).Inc()
}

// Retried counts a failed call that the client will retry.
func (m *Client) Retried() {
	if m == nil {
		return
	}
	m.retries.Inc()
}
