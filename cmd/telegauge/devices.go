package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/telegauge/telegauge/ingest"
	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/internal/secret"
	"github.com/telegauge/telegauge/web"
)

// RecordsFlags locate the database that holds credentials: the same flags
// as serve, so that commands run beside a server find its records.
type RecordsFlags struct {
	DataDir string `default:"./data" help:"Where the SQLite database lives (telegauge.db), as for serve."`
	DB      string `name:"db" help:"PostgreSQL URL, as for serve."`
}

// openRecords opens the database for records only: beside a running
// server it neither takes the history lock nor migrates anything away.
func (f RecordsFlags) openRecords(ctx context.Context) (*store.SQL, error) {
	url := f.DB
	switch url {
	case "memory":
		return nil, errors.New("--db memory keeps no credentials: use the SQLite data directory or PostgreSQL the server uses")
	case "":
		url = filepath.Join(f.DataDir, "telegauge.db")
		if err := os.MkdirAll(f.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("create data directory: %w", err)
		}
	}
	s, err := store.Open(ctx, store.SQLConfig{URL: url, RecordsOnly: true}, nil)
	if err != nil {
		return nil, fmt.Errorf("open records: %w", err)
	}
	return s, nil
}

// DevicesCmd is `telegauge devices`.
type DevicesCmd struct {
	Add    DevicesAddCmd    `cmd:"" help:"Give a device a new token (printed once, alone on the last line); replaces any earlier one."`
	List   DevicesListCmd   `cmd:"" help:"List devices and whether they hold a credential."`
	Revoke DevicesRevokeCmd `cmd:"" help:"Revoke a device's token; a connected device is disconnected at once."`
}

// DevicesAddCmd is `telegauge devices add ID`.
type DevicesAddCmd struct {
	RecordsFlags
	ID string `arg:"" help:"Device id: 1-64 of A-Z a-z 0-9 . _ -"`
}

// Run creates the token.
func (c *DevicesAddCmd) Run() error {
	if !ingest.ValidName(c.ID) {
		return fmt.Errorf("device id %q: want 1-64 of A-Z a-z 0-9 . _ -", c.ID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	token, err := addDevice(ctx, c.RecordsFlags, c.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "Device %s: MQTT username %s, password the token below. It is shown only this once.\n", c.ID, c.ID)
	fmt.Println(token)
	return nil
}

// addDevice gives device id a new token and returns it.
func addDevice(ctx context.Context, f RecordsFlags, id string) (string, error) {
	s, err := f.openRecords(ctx)
	if err != nil {
		return "", err
	}
	defer s.Close()
	return issueDeviceToken(ctx, s, id)
}

// issueDeviceToken gives device id a new token in s and returns it.
func issueDeviceToken(ctx context.Context, s *store.SQL, id string) (string, error) {
	token, err := secret.NewToken()
	if err != nil {
		return "", err
	}
	hash, err := secret.Hash(token)
	if err != nil {
		return "", err
	}
	if err := s.SetDeviceToken(ctx, id, hash); err != nil {
		return "", err
	}
	return token, nil
}

// DevicesListCmd is `telegauge devices list`.
type DevicesListCmd struct {
	RecordsFlags
}

// Run lists the devices.
func (c *DevicesListCmd) Run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.openRecords(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	devs, err := s.Devices(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tCREDENTIAL\tFIRST SEEN\tLAST SEEN")
	for _, d := range devs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.ID, credentialState(d.TokenHash), seen(d.FirstSeenMs), seen(d.LastSeenMs))
	}
	return tw.Flush()
}

// credentialState names what a device's stored token hash is: token,
// revoked or none (web.CredentialToken and the like).
func credentialState(tokenHash string) string {
	switch tokenHash {
	case "":
		return web.CredentialNone
	case secret.Revoked:
		return web.CredentialRevoked
	}
	return web.CredentialToken
}

func seen(ms int64) string {
	if ms <= 0 {
		return "never"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

// DevicesRevokeCmd is `telegauge devices revoke ID`.
type DevicesRevokeCmd struct {
	RecordsFlags
	ID string `arg:"" help:"Device id."`
}

// Run revokes the token.
func (c *DevicesRevokeCmd) Run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := revokeDevice(ctx, c.RecordsFlags, c.ID); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "Device %s revoked; a running server disconnects it within a second.\n", c.ID)
	return nil
}

// revokeDevice removes device id's token.
func revokeDevice(ctx context.Context, f RecordsFlags, id string) error {
	s, err := f.openRecords(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.RevokeDevice(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("device %s holds no credential", id)
		}
		return err
	}
	return nil
}
