package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/telegauge/telegauge/ingest/store"
	"github.com/telegauge/telegauge/internal/secret"
	"github.com/telegauge/telegauge/web"
)

// UsersCmd is `telegauge users`: the operators of the dashboard and API.
type UsersCmd struct {
	Add    UsersAddCmd    `cmd:"" help:"Add an operator, or give an existing one a new token and role. Prints the API token, which is also the login password, once, alone on the last line."`
	List   UsersListCmd   `cmd:"" help:"List operators: name, role, created."`
	Remove UsersRemoveCmd `cmd:"" help:"Remove an operator; a running server ends their sessions and live streams at once."`
}

// UsersAddCmd is `telegauge users add NAME --role admin|viewer`.
type UsersAddCmd struct {
	RecordsFlags
	Name string `arg:"" help:"User name: 1-64 of A-Z a-z 0-9 . _ - @"`
	Role string `enum:"admin,viewer" default:"viewer" help:"viewer reads (devices, history, exports, live, dashboards); admin also manages dashboards."`
}

// Run creates the user and prints the token.
func (c *UsersAddCmd) Run() error { return c.run(os.Stdout, os.Stderr) }

func (c *UsersAddCmd) run(stdout, stderr io.Writer) error {
	token, replaced, err := addUser(context.Background(), c.RecordsFlags, c.Name, c.Role)
	if err != nil {
		return err
	}
	if replaced {
		fmt.Fprintf(stderr, "User %s is now %s with a new token; the old one, and sessions logged in with it, no longer work.\n", c.Name, c.Role)
	} else {
		fmt.Fprintf(stderr, "User %s added as %s.\n", c.Name, c.Role)
	}
	fmt.Fprintf(stderr, "Log in to the dashboard as %s with the token below as the password, or send it as `Authorization: Bearer TOKEN`. It is shown only this once.\n", c.Name)
	fmt.Fprintln(stdout, token)
	return nil
}

// addUser creates or replaces user name with a new token, and returns the
// token and whether the user existed.
func addUser(ctx context.Context, f RecordsFlags, name, role string) (token string, replaced bool, err error) {
	if !web.ValidUserName(name) {
		return "", false, fmt.Errorf("user name %q: want 1-64 of A-Z a-z 0-9 . _ - @", name)
	}
	if _, err := web.ParseRole(role); err != nil {
		return "", false, err
	}
	err = f.withRecords(ctx, func(ctx context.Context, s *store.SQL) error {
		token, replaced, err = issueUserToken(ctx, s, name, role)
		return err
	})
	return token, replaced, err
}

// issueUserToken creates or replaces user name in s with role and a new
// token, and returns the token and whether the user existed.
func issueUserToken(ctx context.Context, s *store.SQL, name, role string) (token string, replaced bool, err error) {
	_, err = s.GetUser(ctx, name)
	switch {
	case err == nil:
		replaced = true
	case !errors.Is(err, store.ErrNotFound):
		return "", false, err
	}
	token, hash, err := secret.Issue()
	if err != nil {
		return "", false, err
	}
	if err := s.PutUser(ctx, store.UserRecord{Name: name, Role: role, TokenHash: hash, CreatedMs: time.Now().UnixMilli()}); err != nil {
		return "", false, err
	}
	return token, replaced, nil
}

// UsersListCmd is `telegauge users list`.
type UsersListCmd struct {
	RecordsFlags
}

// Run lists the users.
func (c *UsersListCmd) Run() error { return c.run(os.Stdout) }

func (c *UsersListCmd) run(stdout io.Writer) error {
	var users []store.UserRecord
	err := c.withRecords(context.Background(), func(ctx context.Context, s *store.SQL) (err error) {
		users, err = s.ListUsers(ctx)
		return err
	})
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tROLE\tCREATED")
	for _, u := range users {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Role, seen(u.CreatedMs))
	}
	return tw.Flush()
}

// UsersRemoveCmd is `telegauge users remove NAME`.
type UsersRemoveCmd struct {
	RecordsFlags
	Name string `arg:"" help:"User name."`
}

// Run removes the user.
func (c *UsersRemoveCmd) Run() error {
	if err := removeUser(context.Background(), c.RecordsFlags, c.Name); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "User %s removed; a running server ends their sessions and live streams within a second.\n", c.Name)
	return nil
}

// removeUser deletes user name.
func removeUser(ctx context.Context, f RecordsFlags, name string) error {
	return f.withRecords(ctx, func(ctx context.Context, s *store.SQL) error {
		err := s.DeleteUser(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no user %s", name)
		}
		return err
	})
}
