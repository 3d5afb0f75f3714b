package remote

import "errors"

// ErrStateDirInUse means another process runs a client on
// Config.StateDir. Two clients on one state directory would share one
// identity, and the coordinator would count them as one client.
var ErrStateDirInUse = errors.New("client: state directory in use by another client process")
