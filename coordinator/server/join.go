package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedzip/fedzip/transport"
	"github.com/fedzip/fedzip/transport/fedzippb"
)

// join asks the nodes at Config.Join to add this one, following leader
// redirects, until it is a voter, the cluster refuses it, or ctx ends.
func (s *Server) join(ctx context.Context, peerTLS *tls.Config) error {
	c := s.cfg
	req := &fedzippb.JoinRequest{ClusterId: c.ClusterID, ClusterSecret: c.ClusterSecret, NodeId: c.ID, RaftAddress: s.node.Address(), GrpcAddress: s.advertise}
	for attempt := 0; ; attempt++ {
		err := CallCluster(ctx, c.Join, peerTLS, c.Insecure, func(cc fedzippb.ClusterClient) error {
			_, err := cc.Join(ctx, req)
			return err
		})
		if err == nil {
			s.log.Info("joined the cluster", "via", c.Join)
			return nil
		}
		if code := status.Code(err); code == codes.Unauthenticated || code == codes.InvalidArgument || code == codes.PermissionDenied {
			return fmt.Errorf("joining the cluster: %w", err)
		}
		s.log.Info("join: retrying", "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("joining the cluster via %v: %w (last error: %w)", c.Join, ctx.Err(), err)
		case <-time.After(min(time.Duration(attempt+1)*200*time.Millisecond, 2*time.Second)):
		}
	}
}

// CallCluster runs call against the nodes at addrs (gRPC, TLS unless
// insecure), following up to two leader redirects.
func CallCluster(ctx context.Context, addrs []string, tlsCfg *tls.Config, insecure bool, call func(fedzippb.ClusterClient) error) error {
	for hop := 0; hop < 3; hop++ {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := transport.Dial(dctx, addrs, transport.ClientConfig{TLS: tlsCfg, Insecure: insecure})
		cancel()
		if err != nil {
			return err
		}
		err = call(fedzippb.NewClusterClient(conn))
		conn.Close()
		if leader, ok := transport.LeaderFromError(err); ok && leader != "" {
			addrs = []string{leader}
			continue
		}
		return err
	}
	return errors.New("too many leader redirects")
}
