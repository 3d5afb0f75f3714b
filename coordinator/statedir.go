package coordinator

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc64"
	"hash/fnv"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedzip/fedzip/internal/boundedfile"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

// A node's state directory (Config.Dir) holds:
//
//	raft.db           the Raft log and stable store (bbolt, through raft-boltdb)
//	snapshots/        raft's file snapshots: TERM-INDEX-MSEC/{meta.json,state.bin}
//	fedzip-node.json  the marker: format, cluster ID, node ID, and the last
//	                  applied index known to be durable
//
// Open checks all of it before raft touches it, and refuses, with one line
// that says what is wrong and how to recover, rather than start a new run,
// roll back, or panic inside raft:
//   - a marker or snapshots without raft.db (deleted or truncated to 0 bytes);
//   - a raft.db and snapshots that together end before the marker's applied
//     index (raft.db replaced by an older copy);
//   - a marker of another node or cluster;
//   - a raft.db that bbolt cannot open or check, whose log has a gap, or
//     whose entries after the newest snapshot do not decode;
//   - a newest snapshot whose meta.json, name, size or CRC-64 disagree.
//
// Config.Recover (fedzip coordinator --recover) is the explicit way out; see
// recoverState.
const (
	logFile      = "raft.db"
	markerFile   = "fedzip-node.json"
	snapshotsDir = "snapshots"
	// markerFormat is the version of fedzip-node.json this code writes.
	markerFormat = 1
	// maxMarkerBytes bounds the marker file read at start.
	maxMarkerBytes = 1 << 16
	// retainSnapshots is how many snapshots the file store keeps.
	retainSnapshots = 2
	// boltOpenTimeout bounds the wait for raft.db's file lock (another
	// process on the same directory).
	boltOpenTimeout = 2 * time.Second
)

// Errors of a node's state directory. Open wraps one of them in every
// refusal.
var (
	ErrStateMissing    = errors.New("coordinator: the Raft log is missing")
	ErrStateRolledBack = errors.New("coordinator: the Raft log is older than what this node applied")
	ErrStateCorrupt    = errors.New("coordinator: the node's state is corrupt")
	ErrStateForeign    = errors.New("coordinator: the state directory belongs to another node")
	ErrNoRecovery      = errors.New("coordinator: nothing to recover from")
	ErrStateInUse      = errors.New("coordinator: the state directory is in use")
)

// marker is fedzip-node.json.
type marker struct {
	Format    int    `json:"format"`
	ClusterID string `json:"cluster_id"`
	NodeID    string `json:"node_id"`
	// Applied is the last applied index known to be durable on this node
	// (in raft.db or a snapshot); it only grows.
	Applied uint64 `json:"applied"`
	// Term is the Raft term when Applied was recorded.
	Term uint64 `json:"term"`
	// Servers are the IDs in the newest Raft configuration known, to tell
	// a single-node cluster from a member of a larger one on recovery.
	Servers []string `json:"servers,omitempty"`
	// Rejoin: the node was recovered empty to be added back to its
	// cluster; until it holds state it must not bootstrap a cluster of
	// its own, also on a restart without Recover.
	Rejoin bool `json:"rejoin,omitempty"`
}

func readMarker(dir string) (*marker, error) {
	path := filepath.Join(dir, markerFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMarkerBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxMarkerBytes {
		return nil, fmt.Errorf("%s is over %d bytes", markerFile, maxMarkerBytes)
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", markerFile, err)
	}
	if m.Format < 1 || m.Format > markerFormat {
		return nil, fmt.Errorf("%s: format %d, this fedzip reads 1..%d", markerFile, m.Format, markerFormat)
	}
	return &m, nil
}

// writeMarker replaces the marker atomically: a temporary file, fsync,
// rename, fsync of the directory.
func writeMarker(dir string, m marker) error {
	m.Format = markerFormat
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	f, err := os.CreateTemp(dir, markerFile+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, markerFile))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("coordinator: writing %s: %w", markerFile, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// snapState is one directory of snapshots/.
type snapState struct {
	id          string
	term, index uint64
	meta        *raft.SnapshotMeta
	// err says why the snapshot cannot be used; nil when checked.
	err error
}

// fileSnapshotMeta is raft's meta.json.
type fileSnapshotMeta struct {
	raft.SnapshotMeta
	CRC []byte
}

// listSnapshots returns the snapshot directories newest first, in raft's
// order (term, index, ID). A name that does not parse sorts first, so that
// it is never silently skipped. It checks each meta.json against its
// directory name; checkCRC also checks the newest's state.bin.
func listSnapshots(dir string) ([]snapState, error) {
	ents, err := os.ReadDir(filepath.Join(dir, snapshotsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []snapState
	for _, e := range ents {
		// raft ignores files and unfinished (.tmp) snapshots.
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		s := snapState{id: e.Name(), term: ^uint64(0), index: ^uint64(0)}
		parts := strings.Split(s.id, "-")
		var perr error
		if len(parts) == 3 {
			s.term, perr = strconv.ParseUint(parts[0], 10, 64)
			if perr == nil {
				s.index, perr = strconv.ParseUint(parts[1], 10, 64)
			}
		}
		if len(parts) != 3 || perr != nil {
			s.term, s.index = ^uint64(0), ^uint64(0)
			s.err = errors.New("not a snapshot name (TERM-INDEX-MSEC)")
		} else {
			s.meta, s.err = readSnapshotMeta(dir, s)
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b snapState) int {
		if c := cmpU64(b.term, a.term); c != 0 {
			return c
		}
		if c := cmpU64(b.index, a.index); c != 0 {
			return c
		}
		return strings.Compare(b.id, a.id)
	})
	return out, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func readSnapshotMeta(dir string, s snapState) (*raft.SnapshotMeta, error) {
	base := filepath.Join(dir, snapshotsDir, s.id)
	b, err := boundedfile.Read(filepath.Join(base, "meta.json"), maxMarkerBytes*16)
	if err != nil {
		return nil, err
	}
	var m fileSnapshotMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("meta.json: %w", err)
	}
	switch {
	case m.ID != s.id || m.Term != s.term || m.Index != s.index:
		return nil, fmt.Errorf("meta.json names snapshot %s (term %d, index %d)", m.ID, m.Term, m.Index)
	case m.Version < raft.SnapshotVersionMin || m.Version > raft.SnapshotVersionMax:
		return nil, fmt.Errorf("meta.json: snapshot version %d", m.Version)
	case len(m.CRC) != 8:
		return nil, errors.New("meta.json: no CRC-64")
	}
	fi, err := os.Stat(filepath.Join(base, "state.bin"))
	if err != nil {
		return nil, err
	}
	if fi.Size() != m.Size {
		return nil, fmt.Errorf("state.bin has %d bytes, meta.json says %d", fi.Size(), m.Size)
	}
	return &m.SnapshotMeta, nil
}

// checkSnapshotCRC reads state.bin and compares its CRC-64 (raft's: ECMA)
// with meta.json's.
func checkSnapshotCRC(dir string, s snapState) error {
	b, err := boundedfile.Read(filepath.Join(dir, snapshotsDir, s.id, "meta.json"), maxMarkerBytes*16)
	if err != nil {
		return err
	}
	var m fileSnapshotMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(dir, snapshotsDir, s.id, "state.bin"))
	if err != nil {
		return err
	}
	defer f.Close()
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if !bytes.Equal(h.Sum(nil), m.CRC) {
		return errors.New("state.bin does not match the CRC-64 in meta.json")
	}
	return nil
}

// logState is what checkLog found in raft.db.
type logState struct {
	first, last uint64
	term        uint64 // CurrentTerm in the stable store
}

// Bucket and key names of raft-boltdb and raft's stable store.
var (
	boltLogs        = []byte("logs")
	boltConf        = []byte("conf")
	keyCurrentTerm  = []byte("CurrentTerm")
	keyLastVoteTerm = []byte("LastVoteTerm")
)

// checkLog checks raft.db before raft opens it: bbolt opens it (meta
// pages, freelist); every page of the log and the stable store reads with
// the right ID and type; the log's keys are contiguous after the newest
// snapshot's index (a gap the snapshot covers is Raft's own); the stable store's
// numbers are 8 bytes; and every entry after index after (the newest
// snapshot's), which raft reads at start and replays, decodes with its own
// index. A panic of bbolt on a corrupt page, or a fault on its memory map,
// becomes an error.
//
// It does not run bbolt's Tx.Check (free-list consistency): Check walks
// the pages on a goroutine of its own, where a corrupt page header is a
// panic no caller can recover.
//
// It cannot see a flipped bit inside an entry that still decodes: bbolt
// keeps no checksums of values.
func checkLog(path string, after uint64) (logState, error) {
	var ls logState
	if err := checkBoltMeta(path); err != nil {
		return ls, err
	}
	err := guard(func() error {
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: boltOpenTimeout})
		if err != nil {
			return err
		}
		defer db.Close()
		return db.View(func(tx *bbolt.Tx) error {
			logs, conf := tx.Bucket(boltLogs), tx.Bucket(boltConf)
			if logs == nil || conf == nil {
				return errors.New("no Raft log in it")
			}
			// Walk every key: this reads every branch and leaf page of
			// the log, and bbolt checks each page's ID and type.
			c := logs.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				if len(k) != 8 || v == nil {
					return fmt.Errorf("log key %x is not an entry", k)
				}
				idx := binary.BigEndian.Uint64(k)
				switch {
				case ls.last == 0:
					ls.first = idx
				case idx != ls.last+1 && idx-1 > after:
					// A gap the snapshot covers is Raft's own: a follower
					// that installs a snapshot keeps its older trailing
					// entries and continues after the snapshot's index.
					return fmt.Errorf("log entries %d..%d are missing", max(ls.last+1, after+1), idx-1)
				}
				ls.last = idx
			}
			if err := conf.ForEach(func(k, v []byte) error {
				if (bytes.Equal(k, keyCurrentTerm) || bytes.Equal(k, keyLastVoteTerm)) && len(v) != 8 {
					return fmt.Errorf("stable key %s holds %d bytes", k, len(v))
				}
				return nil
			}); err != nil {
				return err
			}
			if v := conf.Get(keyCurrentTerm); v != nil {
				ls.term = binary.BigEndian.Uint64(v)
			}
			if ls.last > after && ls.first > after+1 {
				return fmt.Errorf("the log starts at index %d, and no snapshot holds index %d", ls.first, after+1)
			}
			var h codec.MsgpackHandle
			for idx := max(after+1, ls.first); ls.last > 0 && idx <= ls.last; idx++ {
				var k [8]byte
				binary.BigEndian.PutUint64(k[:], idx)
				var e raft.Log
				if err := codec.NewDecoder(bytes.NewReader(logs.Get(k[:])), &h).Decode(&e); err != nil {
					return fmt.Errorf("log entry %d: %v", idx, err)
				}
				if e.Index != idx {
					return fmt.Errorf("log entry %d says index %d", idx, e.Index)
				}
			}
			return nil
		})
	})
	return ls, err
}

// bbolt's on-disk layout (go.etcd.io/bbolt v1.3, native byte order): a
// page starts with id u64, flags u16, count u16, overflow u32; the meta
// page's body follows at 16: magic, version, page size, flags (u32 each),
// root bucket (u64 root, u64 sequence), freelist, high-water page ID, txid,
// then the FNV-64a checksum of the 56 bytes before it.
const (
	boltMagic        = 0xED0CDAED
	boltMetaFlag     = 0x04
	boltFreelistFlag = 0x10
	boltNoFreelist   = ^uint64(0)
)

// checkBoltMeta reads raft.db's meta pages and the free-list page they
// name before bbolt maps the file: bbolt sizes a copy of the free list by
// the count on that page, and a corrupt count kills the process ("fatal
// error: out of memory", which no recover catches).
func checkBoltMeta(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := uint64(fi.Size())
	ne := binary.NativeEndian
	readAt := func(off uint64, n int) ([]byte, error) {
		if off > size || uint64(n) > size-off {
			return nil, fmt.Errorf("bbolt: offset %d is past the end of the file (%d bytes)", off, size)
		}
		b := make([]byte, n)
		_, err := f.ReadAt(b, int64(off))
		return b, err
	}
	type meta struct{ pageSize, freelist, pgid, txid uint64 }
	metaAt := func(off, id uint64) (meta, bool) {
		b, err := readAt(off, 80)
		if err != nil || ne.Uint64(b[0:]) != id || ne.Uint16(b[8:]) != boltMetaFlag || ne.Uint32(b[16:]) != boltMagic {
			return meta{}, false
		}
		h := fnv.New64a()
		h.Write(b[16:72])
		if h.Sum64() != ne.Uint64(b[72:]) {
			return meta{}, false
		}
		return meta{pageSize: uint64(ne.Uint32(b[24:])), freelist: ne.Uint64(b[48:]), pgid: ne.Uint64(b[56:]), txid: ne.Uint64(b[64:])}, true
	}
	m0, ok0 := metaAt(0, 0)
	var m1 meta
	ok1 := false
	if ok0 {
		m1, ok1 = metaAt(m0.pageSize, 1)
	} else {
		for ps := uint64(1024); ps <= 64<<10 && !ok1; ps *= 2 {
			if m1, ok1 = metaAt(ps, 1); ok1 && m1.pageSize != ps {
				ok1 = false
			}
		}
	}
	m := m0
	switch {
	case !ok0 && !ok1:
		return errors.New("bbolt: no valid meta page")
	case !ok0 || (ok1 && m1.txid > m0.txid):
		m = m1
	}
	ps := m.pageSize
	if ps < 512 || ps > 1<<20 || ps&(ps-1) != 0 {
		return fmt.Errorf("bbolt: page size %d", ps)
	}
	if m.pgid > size/ps {
		return fmt.Errorf("bbolt: %d pages in use, the file holds %d", m.pgid, size/ps)
	}
	if m.freelist == boltNoFreelist {
		return nil
	}
	if m.freelist < 2 || m.freelist >= m.pgid {
		return fmt.Errorf("bbolt: free list at page %d of %d", m.freelist, m.pgid)
	}
	b, err := readAt(m.freelist*ps, 24)
	if err != nil {
		return err
	}
	if ne.Uint64(b[0:]) != m.freelist || ne.Uint16(b[8:]) != boltFreelistFlag {
		return fmt.Errorf("bbolt: page %d is not the free list", m.freelist)
	}
	count, ids := uint64(ne.Uint16(b[10:])), uint64(16)
	if count == 0xFFFF { // the count is the first element
		count, ids = ne.Uint64(b[16:]), 24
	}
	pages := uint64(ne.Uint32(b[12:])) + 1
	if pages > m.pgid-m.freelist || count > (pages*ps-ids)/8 {
		return fmt.Errorf("bbolt: free list of %d IDs on %d pages", count, pages)
	}
	return nil
}

// guard runs f on a goroutine of its own that turns a panic, or a memory
// fault (bbolt reads raft.db through mmap), into an error.
func guard(f func() error) error {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("%v", r)
			}
		}()
		done <- f()
	}()
	return <-done
}

// stateProblem is why a state directory cannot start as it is.
type stateProblem int

const (
	stateOK stateProblem = iota
	stateNew
	stateNoLog
	stateBadLog
	stateRolledBack
	stateBadSnapshot
	stateBadMarker
)

// stateDir is what inspectState found.
type stateDir struct {
	dir     string
	marker  *marker
	snaps   []snapState // newest first
	newest  *snapState  // the newest snapshot, if it checked out
	log     logState
	logSize int64 // -1: no raft.db
	problem stateProblem
	err     error  // the refusal, when problem is not stateOK or stateNew
	reason  string // what is wrong with raft.db, in a few words
}

// snapIndex is the index the newest usable snapshot holds, or 0.
func (s *stateDir) snapIndex() uint64 {
	if s.newest == nil {
		return 0
	}
	return s.newest.index
}

// inspectState looks at a state directory without changing it. An error
// is one that no recovery can fix (another node's directory, I/O).
func inspectState(cfg Config) (*stateDir, error) {
	s := &stateDir{dir: cfg.Dir, logSize: -1}
	m, err := readMarker(cfg.Dir)
	if err != nil {
		s.problem, s.err = stateBadMarker, fmt.Errorf("%w: %s: %v (see --recover)", ErrStateCorrupt, filepath.Join(cfg.Dir, markerFile), err)
		return s, nil
	}
	s.marker = m
	if m != nil && (m.NodeID != cfg.ID || m.ClusterID != cfg.ClusterID) {
		return nil, fmt.Errorf("%w: %s is node %q of cluster %q, this is node %q of cluster %q: check --state-dir, --id and --cluster-id (--recover does not change this)",
			ErrStateForeign, filepath.Join(cfg.Dir, markerFile), m.NodeID, m.ClusterID, cfg.ID, cfg.ClusterID)
	}
	if s.snaps, err = listSnapshots(cfg.Dir); err != nil {
		return nil, fmt.Errorf("coordinator: listing snapshots: %w", err)
	}
	if len(s.snaps) > 0 {
		newest := &s.snaps[0]
		if newest.err == nil {
			newest.err = checkSnapshotCRC(cfg.Dir, *newest)
		}
		if newest.err != nil {
			s.problem = stateBadSnapshot
			s.err = fmt.Errorf("%w: the newest snapshot %s: %v (start with --recover to move it aside and use the one before it)",
				ErrStateCorrupt, filepath.Join(cfg.Dir, snapshotsDir, newest.id), newest.err)
			return s, nil
		}
		s.newest = newest
	}
	path := filepath.Join(cfg.Dir, logFile)
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("coordinator: %w", err)
	default:
		s.logSize = fi.Size()
	}
	if s.logSize <= 0 {
		if m == nil && len(s.snaps) == 0 {
			s.problem = stateNew
			return s, nil
		}
		what := "is missing"
		if s.logSize == 0 {
			what = "is empty"
		}
		s.problem, s.reason = stateNoLog, "raft.db "+what
		s.err = fmt.Errorf("%w: %s %s, but %s: refusing to start a new run; restore raft.db from a backup, or see --recover",
			ErrStateMissing, path, what, s.evidence())
		return s, nil
	}
	if s.log, err = checkLog(path, s.snapIndex()); err != nil {
		if errors.Is(err, bbolt.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s is locked by another process (another node on --state-dir %s?)", ErrStateInUse, path, cfg.Dir)
		}
		s.problem, s.reason = stateBadLog, "raft.db is corrupt"
		s.err = fmt.Errorf("%w: %s: %v; restore raft.db from a backup, or see --recover", ErrStateCorrupt, path, err)
		return s, nil
	}
	if m != nil && s.durable() < m.Applied {
		s.problem, s.reason = stateRolledBack, "raft.db is older than the marker"
		s.err = fmt.Errorf("%w: %s ends at index %d and the newest snapshot at %d, but this node applied index %d (%s): raft.db was replaced by an older copy? restore the newest one, or see --recover",
			ErrStateRolledBack, path, s.log.last, s.snapIndex(), m.Applied, filepath.Join(cfg.Dir, markerFile))
		return s, nil
	}
	return s, nil
}

// durable is the last index the log and the newest snapshot hold.
func (s *stateDir) durable() uint64 { return max(s.log.last, s.snapIndex()) }

// evidence says what shows that the directory held state.
func (s *stateDir) evidence() string {
	var e []string
	if s.marker != nil {
		e = append(e, fmt.Sprintf("%s says node %q applied index %d", markerFile, s.marker.NodeID, s.marker.Applied))
	}
	if len(s.snaps) > 0 {
		e = append(e, fmt.Sprintf("%d snapshot(s) up to index %d are there", len(s.snaps), s.snapIndex()))
	}
	return strings.Join(e, " and ")
}

// servers are the other nodes this one last knew of, from the marker and
// the newest snapshot.
func (s *stateDir) otherServers(self string) []string {
	var out []string
	add := func(id string) {
		if id != self && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	if s.marker != nil {
		for _, id := range s.marker.Servers {
			add(id)
		}
	}
	if s.newest != nil {
		for _, srv := range s.newest.meta.Configuration.Servers {
			add(string(srv.ID))
		}
	}
	return out
}

// preparedState is what Open starts raft on.
type preparedState struct {
	bolt  *raftboltdb.BoltStore
	snaps raft.SnapshotStore
	// marker is the marker as written at start.
	marker marker
	// rejoin: the node starts empty to be added back to its cluster; it
	// must not bootstrap.
	rejoin bool
}

// prepareState checks cfg.Dir, recovers it if cfg.Recover says so, and
// opens its stores. Every refusal is logged and returned.
func prepareState(cfg Config, log *slog.Logger) (*preparedState, error) {
	p, err := prepareStateInner(cfg, log)
	if err != nil {
		log.Error("refusing to start on this state directory", "dir", cfg.Dir, "err", err)
	}
	return p, err
}

func prepareStateInner(cfg Config, log *slog.Logger) (*preparedState, error) {
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	p := &preparedState{}
	var s *stateDir
	// Each pass of recovery moves one thing aside; a directory has at most
	// a marker, a log and a few snapshots.
	for pass := 0; ; pass++ {
		var err error
		if s, err = inspectState(cfg); err != nil {
			return nil, err
		}
		if s.problem == stateOK || s.problem == stateNew {
			break
		}
		if !cfg.Recover {
			return nil, s.err
		}
		if pass > 16 {
			return nil, fmt.Errorf("coordinator: recovery does not converge: %w", s.err)
		}
		done, err := recoverState(cfg, s, p, log)
		if err != nil {
			return nil, err
		}
		if done {
			break
		}
	}
	if cfg.Recover && s.problem == stateOK && !p.rejoin {
		log.Info("--recover: the state directory needs no recovery", "dir", cfg.Dir)
	}
	prev := s.marker
	if p.bolt == nil {
		b, err := openBolt(filepath.Join(cfg.Dir, logFile))
		if err != nil {
			return nil, err
		}
		p.bolt = b
	}
	fss, err := raft.NewFileSnapshotStore(cfg.Dir, retainSnapshots, io.Discard)
	if err != nil {
		p.bolt.Close()
		return nil, fmt.Errorf("coordinator: snapshot store: %w", err)
	}
	p.snaps = newestSnapshot{fss}
	// A new directory gets its marker once raft.db exists, so that a crash
	// between the two leaves a log without a marker (accepted, as from
	// before markers), never a marker without a log.
	if prev != nil && prev.Rejoin && s.durable() == 0 {
		p.rejoin = true // still waiting to be added back
	}
	p.marker = marker{ClusterID: cfg.ClusterID, NodeID: cfg.ID, Rejoin: p.rejoin}
	switch {
	case p.rejoin:
	case prev != nil:
		p.marker = *prev
		p.marker.Applied, p.marker.Rejoin = max(prev.Applied, s.snapIndex()), false
	default:
		p.marker.Applied, p.marker.Term = s.snapIndex(), s.log.term
	}
	// The marker's servers are as new as its applied index; the
	// snapshot's may be older. The running node records its own.
	if s.newest != nil && !p.rejoin && len(p.marker.Servers) == 0 {
		for _, srv := range s.newest.meta.Configuration.Servers {
			p.marker.Servers = append(p.marker.Servers, string(srv.ID))
		}
	}
	if prev == nil || p.rejoin || p.marker.Applied != prev.Applied || prev.Rejoin || cfg.Recover {
		if err := writeMarker(cfg.Dir, p.marker); err != nil {
			p.bolt.Close()
			return nil, err
		}
	}
	return p, nil
}

func openBolt(path string) (*raftboltdb.BoltStore, error) {
	b, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: boltOpenTimeout}})
	if err != nil {
		return nil, fmt.Errorf("coordinator: opening the Raft log %s: %w", path, err)
	}
	return b, nil
}

// recoverState is Config.Recover (fedzip coordinator --recover). It never
// deletes: what it sets aside goes to DIR/damaged-TIME/. One pass fixes
// one problem; done reports that p is ready (it opened the log itself).
//
//   - A corrupt newest snapshot is moved aside; the next pass uses the one
//     before it (raft.db must still reach back to it, or that pass finds
//     the log unusable).
//   - An unreadable marker is moved aside; the next pass treats the
//     directory as one from before markers.
//   - A log that is missing, empty, corrupt or rolled back, on a node
//     whose last known configuration names other nodes: everything (raft.db,
//     snapshots/, the marker) is moved aside and the node starts empty,
//     without bootstrapping, to be added back by the leader: on the leader,
//     `fedzip cluster remove --id ID` before the restart and
//     `fedzip cluster add --id ID ...` after it (or start with --join),
//     and the leader sends it a snapshot. Removing it first makes the
//     cluster forget its votes and acknowledgements, which the empty node
//     no longer has.
//   - The same on a single node: a rolled-back raft.db that is intact is
//     kept and the rollback accepted; otherwise raft.db is moved aside and
//     the node restarts from its newest snapshot with an empty log (term
//     carried over). Either way it logs a WARN with the indices lost. With
//     no snapshot there is nothing to recover from: ErrNoRecovery.
func recoverState(cfg Config, s *stateDir, p *preparedState, log *slog.Logger) (done bool, err error) {
	aside := filepath.Join(cfg.Dir, "damaged-"+time.Now().UTC().Format("20060102T150405.000Z"))
	move := func(name string) error {
		src := filepath.Join(cfg.Dir, name)
		if _, err := os.Lstat(src); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(aside, name)), 0o700); err != nil {
			return err
		}
		if err := os.Rename(src, filepath.Join(aside, name)); err != nil {
			return fmt.Errorf("coordinator: moving %s aside: %w", src, err)
		}
		log.Warn("--recover: moved aside", "from", src, "to", filepath.Join(aside, name))
		return nil
	}
	sync := func() error {
		if err := syncDir(cfg.Dir); err != nil {
			return err
		}
		if _, err := os.Stat(aside); err == nil {
			return syncDir(aside)
		}
		return nil
	}
	switch s.problem {
	case stateBadSnapshot:
		log.Warn("--recover: the newest snapshot is corrupt", "err", s.err)
		if err := move(filepath.Join(snapshotsDir, s.snaps[0].id)); err != nil {
			return false, err
		}
		return false, sync()
	case stateBadMarker:
		log.Warn("--recover: the marker is unreadable; without it a rollback of raft.db goes unnoticed this once", "err", s.err)
		if err := move(markerFile); err != nil {
			return false, err
		}
		return false, sync()
	}
	applied := uint64(0)
	if s.marker != nil {
		applied = s.marker.Applied
	}
	if others := s.otherServers(cfg.ID); len(others) > 0 {
		log.Warn("--recover: this node's log is unusable and it is a member of a larger cluster: it starts empty, without bootstrapping, and the leader must add it back (remove it first: fedzip cluster remove --id ID, then fedzip cluster add, or start it with --join)",
			"node", cfg.ID, "others", others, "applied_before", applied, "err", s.err)
		for _, name := range []string{logFile, snapshotsDir, markerFile} {
			if err := move(name); err != nil {
				return false, err
			}
		}
		p.rejoin = true
		return true, sync()
	}
	if s.problem == stateRolledBack {
		log.Warn("--recover: accepting the rollback of a single node", "applied_before", applied, "now", s.durable(),
			"lost", fmt.Sprintf("%d..%d", s.durable()+1, applied))
		// The marker starts again from what is certainly committed; it
		// catches up as the node applies.
		s.marker.Applied = s.snapIndex()
		return true, nil
	}
	if s.newest == nil {
		return false, fmt.Errorf("%w: in %s, %s and no snapshot is there to restart from: this node's run is lost; to start a new run, move %s aside and start on an empty directory",
			ErrNoRecovery, cfg.Dir, s.reason, cfg.Dir)
	}
	log.Warn("--recover: restarting a single node from its newest snapshot with an empty log", "snapshot", s.newest.id,
		"applied_before", applied, "lost", fmt.Sprintf("%d..%d", s.newest.index+1, max(applied, s.newest.index)), "err", s.err)
	if err := move(logFile); err != nil {
		return false, err
	}
	if err := sync(); err != nil {
		return false, err
	}
	b, err := openBolt(filepath.Join(cfg.Dir, logFile))
	if err != nil {
		return false, err
	}
	// Raft must not go back to a term it may have voted in.
	term := s.newest.term
	if s.marker != nil {
		term = max(term, s.marker.Term)
	}
	if err := b.SetUint64(keyCurrentTerm, term); err != nil {
		b.Close()
		return false, err
	}
	p.bolt = b
	s.problem, s.log = stateOK, logState{term: term}
	if s.marker != nil {
		// The marker keeps the applied index the rollback went back from
		// only in the log line; from here on it counts from the snapshot.
		s.marker.Applied = s.newest.index
	}
	return true, nil
}

// newestSnapshot is raft's file snapshot store listing only the newest
// snapshot, the one Open checked: raft then fails to start if it cannot
// restore it, instead of silently going back to an older one.
type newestSnapshot struct{ *raft.FileSnapshotStore }

func (s newestSnapshot) List() ([]*raft.SnapshotMeta, error) {
	l, err := s.FileSnapshotStore.List()
	if len(l) > 1 {
		l = l[:1]
	}
	return l, err
}
