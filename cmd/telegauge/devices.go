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

// recordsTimeout bounds one command's work on the records.
const recordsTimeout = 30 * time.Second

// withRecords opens the records, runs do and closes them again, all within
// recordsTimeout.
func (f RecordsFlags) withRecords(ctx context.Context, do func(ctx context.Context, s *store.SQL) error) error {
	ctx, cancel := context.WithTimeout(ctx, recordsTimeout)
	defer cancel()
	s, err := f.openRecords(ctx)
	if err != nil {
		return err
	}
	defer s.Close()
	return do(ctx, s)
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
	token, err := addDevice(context.Background(), c.RecordsFlags, c.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "Device %s: MQTT username %s, password the token below. It is shown only this once.\n", c.ID, c.ID)
	fmt.Println(token)
	return nil
}

// addDevice gives device id a new token and returns it.
func addDevice(ctx context.Context, f RecordsFlags, id string) (token string, err error) {
	err = f.withRecords(ctx, func(ctx context.Context, s *store.SQL) error {
		token, err = issueDeviceToken(ctx, s, id)
		return err
	})
	return token, err
}

// issueDeviceToken gives device id a new token in s and returns it.
func issueDeviceToken(ctx context.Context, s *store.SQL, id string) (string, error) {
	token, hash, err := secret.Issue()
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
	var devs []store.DeviceRecord
	err := c.withRecords(context.Background(), func(ctx context.Context, s *store.SQL) (err error) {
		devs, err = s.Devices(ctx)
		return err
	})
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
	if err := revokeDevice(context.Background(), c.RecordsFlags, c.ID); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "Device %s revoked; a running server disconnects it within a second.\n", c.ID)
	return nil
}

// revokeDevice removes device id's token.
func revokeDevice(ctx context.Context, f RecordsFlags, id string) error {
	return f.withRecords(ctx, func(ctx context.Context, s *store.SQL) error {
		err := s.RevokeDevice(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("device %s holds no credential", id)
		}
		return err
	})
}
