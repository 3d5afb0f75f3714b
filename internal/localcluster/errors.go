package localcluster

import "errors"

var (
	// ErrConfig is a Config that Run cannot use.
	ErrConfig = errors.New("localcluster: bad configuration")
	// ErrStaleState is a work folder that holds an earlier run's state:
	// remove it, or set Config.Reset.
	ErrStaleState = errors.New("localcluster: stale work folder")
	// ErrForeignWork is a work folder that fedzip local did not make and
	// that is not empty: Run neither writes into it nor, with Reset,
	// removes anything from it.
	ErrForeignWork = errors.New("localcluster: not a work folder of fedzip local")
	// ErrFailed is a cluster that cannot go on: a node failed to start,
	// the nodes lost their quorum, or every client failed.
	ErrFailed = errors.New("localcluster: the cluster failed")
)
