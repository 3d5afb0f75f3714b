package transport

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/transport/fedzippb"
)

// LeaderKey is the trailer metadata key in which a follower names the
// leader's address.
const LeaderKey = "fedzip-leader"

// NotLeaderError is what a follower's handler returns for an RPC only the
// leader serves: codes.Unavailable, wrapping ErrNotLeader, with the
// leader's address (if known) in a fedzippb.NotLeader status detail and,
// when ctx is a gRPC server context, in the trailer LeaderKey. An empty
// leaderAddr means "no leader known": the client backs off and retries.
func NotLeaderError(ctx context.Context, leaderAddr string) error {
	if leaderAddr == "" {
		return errorf(codes.Unavailable, ErrNotLeader, "no leader known")
	}
	// Not a gRPC server context (a direct call in a test): no trailer to set.
	_ = grpc.SetTrailer(ctx, metadata.Pairs(LeaderKey, leaderAddr))
	err := errorf(codes.Unavailable, ErrNotLeader, "leader is %s", leaderAddr)
	se := err.(*statusError)
	if st, derr := se.st.WithDetails(&fedzippb.NotLeader{LeaderAddress: leaderAddr}); derr == nil {
		se.st = st
	}
	return se
}

// LeaderFromError returns the leader's address from a NotLeaderError,
// received over gRPC or not, and false for any other error or when the
// follower knew no leader.
func LeaderFromError(err error) (addr string, ok bool) {
	if err == nil {
		return "", false
	}
	var st *status.Status
	var se *statusError
	if errors.As(err, &se) {
		st = se.st
	} else if s, isStatus := status.FromError(err); isStatus {
		st = s
	}
	if st == nil || st.Code() != codes.Unavailable {
		return "", false
	}
	for _, d := range st.Details() {
		if nl, isNL := d.(*fedzippb.NotLeader); isNL && nl.GetLeaderAddress() != "" {
			return nl.GetLeaderAddress(), true
		}
	}
	return "", false
}
