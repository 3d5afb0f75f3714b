package remote

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/client"
	"github.com/fedzip/fedzip/gradient"
	"github.com/fedzip/fedzip/metrics"
	"github.com/fedzip/fedzip/runspec"
	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// Config configures a client process.
type Config struct {
	// Addrs are coordinator addresses ("host:port"); the runtime finds the
	// leader among them and follows redirects.
	Addrs []string
	// TLS is the client's TLS configuration; nil requires Insecure.
	TLS      *tls.Config
	Insecure bool
	// Name and JoinSecret are presented at registration.
	Name       string
	JoinSecret string
	// StateDir keeps the client's identity and its unacknowledged update
	// across restarts, its error-feedback residual, and, when the run has
	// a download codec, the model it holds (model.bin, or replica.bin
	// with the lattice codec), so that after a restart it still downloads
	// only the deltas since that version.
	StateDir string
	// Examples is the number of local training examples, declared at
	// registration.
	Examples uint64
	// NewTrainer returns the trainer for a task's model. It is called
	// again only when the model changes.
	NewTrainer func(task *fedzippb.Task) (client.Trainer, error)
	// MaxBackoff caps the wait between retries (exponential with jitter,
	// from 100 ms); 0 means 5 s.
	MaxBackoff time.Duration
	Logger     *slog.Logger
	// OnIdentity, if set, is called with the client's ID and token once
	// they are known (after registration, or at start from the state
	// directory), for example to announce the ID in the gossip metadata
	// with a proof made from the token.
	OnIdentity func(id uint64, token string)
	// Metrics, if not nil, records the client's timings, bytes and
	// outcomes.
	Metrics *metrics.Client
	// MaxAbsParam bounds the magnitude of every model parameter the client
	// accepts and of every update value it uploads: a model or an update
	// with a value beyond it, or not finite, is refused (ErrModelRefused,
	// ErrUpdateRefused) and the client waits for the next task. 0 means
	// DefaultMaxAbsParam.
	MaxAbsParam float32
	// MaxParams bounds a task's model_params; a task beyond it is refused
	// (ErrTaskRefused). 0 means DefaultMaxParams.
	MaxParams int
}

// Summary reports what a client did.
type Summary struct {
	ClientID uint64
	Rounds   []int
	Bytes    int64
}

// state is what a client keeps in StateDir/state.json.
type state struct {
	ClientID  uint64 `json:"client_id"`
	Token     string `json:"token"`
	LastRound uint64 `json:"last_round"`
	// Pending is an update trained but not yet acknowledged; its payload is
	// in pending.bin.
	Pending *pending `json:"pending,omitempty"`
}

type pending struct {
	Round        uint64  `json:"round"`
	ModelVersion uint64  `json:"model_version"`
	Examples     uint64  `json:"examples"`
	TrainLoss    float64 `json:"train_loss"`
	// Eval is the evaluation the task asked for, sent with the update
	// (and again on a resubmission, so that it matches).
	Eval *evalReport `json:"eval,omitempty"`
	// Timings of this update, reported with it (not kept across restarts).
	download, train, encode time.Duration
}

// runner is a running client: fetch task → download → train → encode →
// upload, until the run is done or ctx ends.
type runner struct {
	cfg  Config
	log  *slog.Logger
	st   state
	conn *grpc.ClientConn
	// connected says whether a dial has succeeded in this run.
	connected bool
	api       fedzippb.CoordinatorClient
	creds     *transport.TokenCredentials
	addrs     []string
	trainer   client.Trainer
	model     string
	enc       *gradient.Encoder
	encKey    string
	// res and vel carry enc's state to and from residual.bin and
	// velocity.bin.
	res, vel []float32
	backoff  time.Duration
	// redirected says whether the last failed call was a leader redirect
	// followed at once; reset when a call succeeds.
	redirected bool
	sum        Summary
	// lastUpload is the duration of the last acknowledged upload, reported
	// with the next update.
	lastUpload time.Duration
	// held is, with a download codec, the model the client holds at
	// version heldVersion (nil: none); heldLoaded says whether model.bin
	// was read.
	held        []float32
	heldVersion uint64
	heldLoaded  bool
	// rep is, with the lattice download codec, the model the client
	// holds (nil: none, or a client that cannot rebuild the initial
	// model); repKey names the initial model it was made from.
	rep    *gradient.Replica
	repKey string
	// initRefused names the last task model whose initial model the
	// client could not hold (its reason is logged once).
	initRefused string
	// refused is the last task refused for what it holds (its counts, its
	// model or the update trained from it); nil if none. The same task is
	// not downloaded or trained again.
	refused *taskKey
}

// taskKey names a task: its round and the model version it trains from.
type taskKey struct{ round, version uint64 }

// errStillRefused is what once returns for a task it refused already: the
// runtime backs off and polls again.
var errStillRefused = errors.New("client: this task was refused; waiting for the next one")

// Run runs a client until the coordinator says training is done, ctx
// ends, or the coordinator refuses its registration. Network errors are
// retried with backoff; but when no dial has succeeded yet and the
// server's certificate is signed by an authority cfg.TLS does not trust,
// Run returns at once with an error wrapping transport.ErrUnknownAuthority
// that says to pass the cluster's CA (transport.ExplainTLSError). It
// locks cfg.StateDir while it runs: a Run on a directory another holds
// returns at once with an error wrapping ErrStateDirInUse.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if len(cfg.Addrs) == 0 {
		return Summary{}, errors.New("client: no coordinator address")
	}
	if cfg.NewTrainer == nil {
		return Summary{}, errors.New("client: no trainer")
	}
	if cfg.StateDir == "" {
		return Summary{}, errors.New("client: no state directory")
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if !(cfg.MaxAbsParam > 0) || math.IsInf(float64(cfg.MaxAbsParam), 0) {
		cfg.MaxAbsParam = DefaultMaxAbsParam
	}
	if cfg.MaxParams <= 0 {
		cfg.MaxParams = DefaultMaxParams
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return Summary{}, err
	}
	release, err := lockStateDir(cfg.StateDir)
	if err != nil {
		return Summary{}, err
	}
	defer release()
	r := &runner{cfg: cfg, log: cfg.Logger, addrs: slices.Clone(cfg.Addrs), creds: transport.NewTokenCredentials(0, "")}
	defer r.close()
	if err := r.load(); err != nil {
		return Summary{}, err
	}
	return r.run(ctx)
}

func (r *runner) close() {
	if r.conn != nil {
		r.conn.Close()
		r.conn = nil
	}
}

func (r *runner) statePath() string   { return filepath.Join(r.cfg.StateDir, "state.json") }
func (r *runner) pendingPath() string { return filepath.Join(r.cfg.StateDir, "pending.bin") }

func (r *runner) load() error {
	b, err := os.ReadFile(r.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &r.st); err != nil {
		return fmt.Errorf("client: %s: %w", r.statePath(), err)
	}
	if r.st.ClientID != 0 {
		r.creds.Set(r.st.ClientID, r.st.Token)
	}
	return nil
}

// save writes the state atomically.
func (r *runner) save() error {
	b, err := json.MarshalIndent(r.st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(r.statePath(), b)
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (r *runner) dial(ctx context.Context) error {
	r.close()
	conn, err := transport.Dial(ctx, r.addrs, transport.ClientConfig{TLS: r.cfg.TLS, Insecure: r.cfg.Insecure, Credentials: r.creds})
	if err != nil {
		return err
	}
	r.conn, r.api, r.connected = conn, fedzippb.NewCoordinatorClient(conn), true
	return nil
}

// retry decides what to do after a failed call: follow a leader redirect,
// or back off and reconnect. It returns ctx's error when ctx ends.
func (r *runner) retry(ctx context.Context, err error) error {
	if leader, ok := transport.LeaderFromError(err); ok && leader != "" {
		r.log.Info("following the leader", "addr", leader)
		r.addrs = append([]string{leader}, slices.DeleteFunc(slices.Clone(r.cfg.Addrs), func(a string) bool { return a == leader })...)
		r.close()
		if !r.redirected {
			r.redirected = true
			return ctx.Err()
		}
		// A redirect again, with no call served in between (a node that
		// names itself, or followers naming each other during an
		// election): follow it after the backoff, not at once.
		return r.wait(ctx, err)
	}
	if err := r.wait(ctx, err); err != nil {
		return err
	}
	if status.Code(err) == codes.Unavailable || r.conn == nil {
		r.close()
		// Rotate so that the next dial tries another node first.
		r.addrs = append(r.addrs[1:], r.addrs[0])
	}
	return nil
}

// wait counts a retry and sleeps for the next backoff; it returns ctx's
// error when ctx ends first.
func (r *runner) wait(ctx context.Context, err error) error {
	r.cfg.Metrics.Retried()
	r.backoff = min(max(2*r.backoff, 100*time.Millisecond), r.cfg.MaxBackoff)
	wait := time.Duration(float64(r.backoff) * (0.5 + rand.Float64()/2))
	if explained := transport.ExplainTLSError(err); explained != err {
		r.log.Warn("retrying", "err", explained, "wait", wait)
	} else {
		r.log.Debug("retrying", "err", err, "wait", wait)
	}
	select {
	case <-time.After(wait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *runner) run(ctx context.Context) (Summary, error) {
	for {
		if err := ctx.Err(); err != nil {
			return r.sum, err
		}
		if r.conn == nil {
			if err := r.dial(ctx); err != nil {
				if explained := transport.ExplainTLSError(err); explained != err && !r.connected {
					// A CA that does not sign the cluster's certificate
					// will not start to: at start, say how to fix it.
					return r.sum, fmt.Errorf("client: %w", explained)
				}
				if e := r.retry(ctx, err); e != nil {
					return r.sum, e
				}
				continue
			}
		}
		if r.st.ClientID == 0 {
			res, err := r.api.Register(ctx, &fedzippb.RegisterRequest{JoinSecret: r.cfg.JoinSecret, Name: r.cfg.Name,
				Capabilities: &fedzippb.Capabilities{Codecs: gradient.PresetNames(), Examples: r.cfg.Examples}})
			if err != nil {
				if c := status.Code(err); c == codes.Unauthenticated || c == codes.PermissionDenied || c == codes.InvalidArgument {
					return r.sum, fmt.Errorf("client: registration refused: %w", err)
				}
				if e := r.retry(ctx, err); e != nil {
					return r.sum, e
				}
				continue
			}
			r.redirected = false
			r.st = state{ClientID: res.GetClientId(), Token: res.GetToken()}
			r.creds.Set(r.st.ClientID, r.st.Token)
			// A model held under another identity is another run's.
			r.forgetModel()
			if err := r.save(); err != nil {
				return r.sum, err
			}
			r.log.Info("registered", "id", r.st.ClientID)
		}
		if r.sum.ClientID != r.st.ClientID && r.cfg.OnIdentity != nil {
			r.cfg.OnIdentity(r.st.ClientID, r.st.Token)
		}
		r.sum.ClientID = r.st.ClientID
		done, err := r.once(ctx)
		if done {
			return r.sum, nil
		}
		if err != nil {
			if transport.IsNoTask(err) && ctx.Err() == nil {
				continue
			}
			var fatal *fatalError
			if errors.As(err, &fatal) {
				return r.sum, fatal.err
			}
			if e := r.retry(ctx, err); e != nil {
				return r.sum, e
			}
			continue
		}
		r.backoff, r.redirected = 0, false
	}
}

type fatalError struct{ err error }

func (f *fatalError) Error() string { return f.err.Error() }

// once runs one task: it returns done when the run is over.
func (r *runner) once(ctx context.Context) (done bool, err error) {
	task, err := r.api.GetTask(ctx, &fedzippb.GetTaskRequest{ClientId: r.st.ClientID})
	if err != nil {
		if status.Code(err) == codes.Unauthenticated || status.Code(err) == codes.NotFound {
			// The coordinator does not know this identity (a new run):
			// register again.
			r.log.Warn("identity refused; registering again", "err", err)
			r.st = state{}
			r.creds.Set(0, "")
			return false, r.save()
		}
		return false, err
	}
	if task.GetDone() {
		return true, nil
	}
	key := taskKey{task.GetRound(), task.GetModelVersion()}
	if r.refused != nil && *r.refused == key {
		return false, errStillRefused
	}
	if err := checkTask(task, r.cfg.MaxParams); err != nil {
		return false, r.refuse(key, err)
	}
	if p := r.st.Pending; p != nil && p.Round == task.GetRound() && p.ModelVersion == task.GetModelVersion() {
		payload, err := os.ReadFile(r.pendingPath())
		if err == nil {
			r.log.Info("resubmitting an unacknowledged update", "round", p.Round)
			return false, r.upload(ctx, task, p, payload)
		}
	}
	if err := r.ensureTrainer(task); err != nil {
		if !errors.Is(err, ErrTaskRefused) {
			err = fmt.Errorf("%w: no trainer for it: %w", ErrTaskRefused, err)
		}
		return false, r.refuse(key, err)
	}
	if s, ok := r.trainer.(interface{ NumParams() int }); ok && uint64(s.NumParams()) != task.GetModelParams() {
		return false, r.refuse(key, fmt.Errorf("%w: model_params %d, the trainer's model has %d", ErrTaskRefused, task.GetModelParams(), s.NumParams()))
	}
	lim, err := transport.CheckedLimits(int(task.GetModelParams()), 0)
	if err != nil {
		return false, r.refuse(key, fmt.Errorf("%w: %w", ErrTaskRefused, err))
	}
	start := time.Now()
	var (
		h      *fedzippb.ModelHeader
		global []float32
	)
	if task.GetDownloadCodec() == "" {
		var body []byte
		h, body, err = transport.DownloadModel(ctx, r.api, &fedzippb.DownloadRequest{ClientId: r.st.ClientID, WantVersion: task.GetModelVersion()}, lim, nil)
		if err != nil {
			return false, err
		}
		r.cfg.Metrics.Downloaded(len(body), time.Since(start))
		if global, err = client.ParseModel(body, int(task.GetModelParams())); err != nil {
			return false, r.refuse(key, fmt.Errorf("%w: %w", ErrModelRefused, err))
		}
		if err := checkValues(global, r.cfg.MaxAbsParam); err != nil {
			return false, r.refuse(key, fmt.Errorf("%w: version %d: %w", ErrModelRefused, h.GetVersion(), err))
		}
	} else if h, global, err = r.fetch(ctx, task, lim, start); err != nil {
		if errors.Is(err, ErrModelRefused) {
			return false, r.refuse(key, err)
		}
		return false, err
	}
	downloaded := time.Now()
	// Evaluation (when the task asks) counts in the training time.
	eval, err := r.evaluate(ctx, task, global)
	if err != nil {
		return false, err
	}
	// With secagg_local support-adam the client trains only the round's
	// support, which its advertise step carries: it asks for that step
	// first, and secAggRound answers the step it holds.
	tk, first := taskOf(task), (*saPlan)(nil)
	if adam, _ := checkSecAggLocal(task); adam {
		if first, err = r.secAggFirst(ctx, task, key, len(global)); first == nil {
			return false, err
		}
		tk.Local, tk.Support = runspec.SecAggLocalSupportAdam, first.idx
	}
	local := make([]float32, len(global))
	u, res, err := client.Step(ctx, r.trainer, global, local, tk)
	if err != nil {
		return false, err
	}
	trained := time.Now()
	if err := checkValues(u.Delta, r.cfg.MaxAbsParam); err != nil {
		return false, r.refuse(key, fmt.Errorf("%w: round %d, trained from version %d: %w", ErrUpdateRefused, task.GetRound(), h.GetVersion(), err))
	}
	if task.GetSecagg() {
		return false, r.secAggRound(ctx, task, u.Delta, first)
	}
	payload, err := r.encode(task, u.Delta)
	if err != nil {
		if errors.Is(err, ErrUpdateRefused) || errors.Is(err, ErrTaskRefused) {
			return false, r.refuse(key, err)
		}
		return false, &fatalError{err}
	}
	encoded := time.Now()
	r.cfg.Metrics.Trained(trained.Sub(downloaded), encoded.Sub(trained), res.Loss, 4*len(u.Delta), len(payload))
	p := &pending{Round: task.GetRound(), ModelVersion: h.GetVersion(), Examples: uint64(res.Examples), TrainLoss: res.Loss, Eval: eval,
		download: downloaded.Sub(start), train: trained.Sub(downloaded), encode: encoded.Sub(trained)}
	if err := writeAtomic(r.pendingPath(), payload); err != nil {
		return false, err
	}
	r.st.Pending = p
	if err := r.save(); err != nil {
		return false, err
	}
	return false, r.upload(ctx, task, p, payload)
}

// refuse remembers that the task key was refused for err, logs it, and
// returns err: the run loop backs off and polls for the next task.
func (r *runner) refuse(key taskKey, err error) error {
	r.refused = &key
	r.log.Warn("task refused; waiting for the next one", "round", key.round, "model_version", key.version, "err", err)
	return err
}

func (r *runner) upload(ctx context.Context, task *fedzippb.Task, p *pending, payload []byte) error {
	h := &fedzippb.UpdateHeader{ClientId: r.st.ClientID, Round: p.Round, ModelVersion: p.ModelVersion, Examples: p.Examples, TrainLoss: p.TrainLoss,
		DownloadSeconds: p.download.Seconds(), TrainSeconds: p.train.Seconds(), EncodeSeconds: p.encode.Seconds(), UploadSeconds: r.lastUpload.Seconds(),
		Eval: p.Eval.message()}
	start := time.Now()
	res, err := transport.Upload(ctx, r.api, h, payload, 0)
	if err != nil {
		switch c := status.Code(err); c {
		case codes.FailedPrecondition, codes.InvalidArgument:
			// The round moved on or the update is refused: retrying the
			// same bytes cannot succeed.
			r.cfg.Metrics.Refused(metrics.CodeReason(c))
			r.log.Warn("update refused", "round", p.Round, "err", err)
			r.st.Pending = nil
			r.st.LastRound = p.Round
			return r.save()
		}
		return err
	}
	r.lastUpload = time.Since(start)
	codec := task.GetUploadCodec()
	if codec == "" {
		codec = "none"
	}
	r.cfg.Metrics.Uploaded(p.Round, codec, len(payload), r.lastUpload)
	r.log.Info("update accepted", "round", p.Round, "duplicate", res.GetDuplicate(), "received", res.GetReceived(), "selected", res.GetSelected())
	r.sum.Rounds = append(r.sum.Rounds, int(p.Round))
	r.sum.Bytes += int64(len(payload))
	r.st.Pending = nil
	r.st.LastRound = p.Round
	os.Remove(r.pendingPath())
	return r.save()
}

// encode turns the update into upload bytes with the task's codec. With
// error feedback the residual is saved before the upload, together with the
// pending update, so that a restart neither loses nor repeats it. When the
// task names its run (run_id), the message names the run and the round
// (gradient.FlagRun), "none" included, whose message is then the dense
// float32 one; a run without an ID takes "none" as raw float32. If the
// error-feedback state cannot take the update (residual + delta
// overflows), the state is cleared, on disk too, and the update encoded
// again from zero state; a codec the client cannot build or a malformed
// run ID gives ErrTaskRefused, an update that still does not encode
// ErrUpdateRefused. Other errors are the state files'.
func (r *runner) encode(task *fedzippb.Task, delta []float32) ([]byte, error) {
	spec := task.GetUploadCodec()
	run, err := TaskRun(task)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTaskRefused, err)
	}
	if gradient.IsNone(spec) {
		if run.IsZero() {
			return gradient.AppendFloat32s(nil, delta), nil
		}
		spec = "none"
	}
	key := fmt.Sprintf("%s/%d", spec, len(delta))
	if r.enc == nil || r.encKey != key {
		sp, err := gradient.ParseSpec(spec)
		if err != nil {
			return nil, fmt.Errorf("%w: the coordinator's upload codec: %w", ErrTaskRefused, err)
		}
		enc, err := gradient.NewEncoder(sp, len(delta))
		if err != nil {
			return nil, fmt.Errorf("%w: the coordinator's upload codec: %w", ErrTaskRefused, err)
		}
		r.enc, r.encKey = enc, key
		nr, nv := enc.StateLen()
		r.res, r.vel = make([]float32, nr), make([]float32, nv)
		loadFloats(filepath.Join(r.cfg.StateDir, "residual.bin"), r.res)
		loadFloats(filepath.Join(r.cfg.StateDir, "velocity.bin"), r.vel)
		if err := enc.ImportState(r.res, r.vel); err != nil {
			// Not expected: loadFloats leaves a slice zero rather than
			// hold a value that is not finite. The state stays zero.
			r.log.Warn("discarding the error-feedback state files", "err", err)
		}
	}
	r.enc.SetRun(run)
	payload, _, err := r.enc.Encode(nil, delta, int(task.GetRound()), task.GetTaskSeed())
	if errors.Is(err, gradient.ErrNonFinite) {
		// Encode cleared the state it had partly updated; the files
		// still hold the state that could not take this update.
		r.log.Warn("error-feedback state overflowed; cleared", "round", task.GetRound(), "err", err)
		for _, name := range []string{"residual.bin", "velocity.bin"} {
			if e := os.Remove(filepath.Join(r.cfg.StateDir, name)); e != nil && !errors.Is(e, os.ErrNotExist) {
				return nil, e
			}
		}
		if payload, _, err = r.enc.Encode(nil, delta, int(task.GetRound()), task.GetTaskSeed()); err != nil {
			r.enc.Reset()
			return nil, fmt.Errorf("%w: %w", ErrUpdateRefused, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUpdateRefused, err)
	}
	r.enc.ExportState(r.res, r.vel)
	if err := saveFloats(filepath.Join(r.cfg.StateDir, "residual.bin"), r.res); err != nil {
		return nil, err
	}
	if err := saveFloats(filepath.Join(r.cfg.StateDir, "velocity.bin"), r.vel); err != nil {
		return nil, err
	}
	return payload, nil
}

// TaskRun returns the run a task names (Task.run_id), the zero RunID when
// it names none, and an error when run_id is not a run ID.
func TaskRun(task *fedzippb.Task) (gradient.RunID, error) {
	var run gradient.RunID
	switch b := task.GetRunId(); len(b) {
	case 0:
	case gradient.RunIDSize:
		copy(run[:], b)
		if run.IsZero() {
			return run, errors.New("client: the task's run ID is zero")
		}
	default:
		return run, fmt.Errorf("client: the task's run ID has %d bytes, want %d", len(b), gradient.RunIDSize)
	}
	return run, nil
}

// loadFloats fills dst from a file of little-endian float32 written by
// saveFloats; a missing or mis-sized file leaves dst zero.
func loadFloats(path string, dst []float32) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 4*len(dst) || len(dst) == 0 {
		return
	}
	if _, err := gradient.DecodeFloat32s(dst, b); err != nil {
		clear(dst) // a damaged state file: start from no state
	}
}

func saveFloats(path string, src []float32) error {
	if len(src) == 0 {
		return nil
	}
	return writeAtomic(path, gradient.AppendFloat32s(nil, src))
}

func (r *runner) ensureTrainer(task *fedzippb.Task) error {
	// Every field NewTrainer may judge the task by: a task that changes
	// only the input shape gets a new check against the local data.
	key := fmt.Sprintf("%s/%d/%dx%dx%d/%d/%d", task.GetModel(), task.GetInputDim(), task.GetInputChannels(), task.GetInputHeight(), task.GetInputWidth(),
		task.GetClasses(), task.GetBatchSize())
	if r.trainer != nil && r.model == key {
		return nil
	}
	t, err := r.cfg.NewTrainer(task)
	if err != nil {
		return err
	}
	r.trainer, r.model = t, key
	return nil
}
