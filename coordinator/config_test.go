package coordinator

import (
	"errors"
	"math"
	"testing"
	"time"
)

// TestConfigValidate: Open refuses what Validate refuses, with an error
// wrapping ErrConfig (ErrRaftClearText for clear-text Raft off loopback),
// and accepts DefaultConfig with the node's own settings, and zero values
// that Config documents as defaults.
func TestConfigValidate(t *testing.T) {
	good := func() Config {
		c := DefaultConfig()
		c.ID, c.Dir, c.RaftAddr, c.Run = "n1", t.TempDir(), "127.0.0.1:0", testRun(1)
		return c
	}
	if err := good().Validate(); err != nil {
		t.Fatalf("DefaultConfig with an ID, a directory and an address: %v", err)
	}
	if err := (Config{ID: "n1", Dir: "d", RaftAddr: "127.0.0.1:0"}).Validate(); err != nil {
		t.Fatalf("zero values meaning defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		set  func(*Config)
		want error
	}{
		{"no ID", func(c *Config) { c.ID = "" }, ErrConfig},
		{"no directory", func(c *Config) { c.Dir = "" }, ErrConfig},
		{"no Raft address", func(c *Config) { c.RaftAddr = "" }, ErrConfig},
		{"negative tick", func(c *Config) { c.Tick = -time.Second }, ErrConfig},
		{"negative client TTL", func(c *Config) { c.ClientTTL = -1 }, ErrConfig},
		{"negative max clients", func(c *Config) { c.MaxClients = -1 }, ErrConfig},
		{"NaN register rate", func(c *Config) { c.RegisterRate = math.NaN() }, ErrConfig},
		{"first poll TTL beyond the TTL", func(c *Config) { c.ClientTTL, c.FirstPollTTL = time.Minute, time.Hour }, ErrConfig},
		{"clear-text Raft off loopback", func(c *Config) { c.RaftAddr = "192.0.2.1:7071" }, ErrRaftClearText},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.set(&c)
			if err := c.Validate(); !errors.Is(err, tc.want) {
				t.Fatalf("Validate: %v, want %v", err, tc.want)
			}
			if n, err := Open(c); !errors.Is(err, tc.want) {
				if n != nil {
					n.Close()
				}
				t.Fatalf("Open: %v, want %v", err, tc.want)
			}
		})
	}
	c := good()
	c.Run.Round.MinClients = -1
	if err := c.Validate(); err == nil {
		t.Fatal("an invalid run was accepted")
	}
}
