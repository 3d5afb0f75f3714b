package runspec

import "errors"

// ErrInvalid is wrapped by every error of Spec.Validate, CheckLocal,
// CheckTask, CheckUploadCodec, CheckDownloadCodec and DP.Strategy; the
// message names the field by its command-line flag (such as --momentum).
var ErrInvalid = errors.New("runspec: invalid run")
