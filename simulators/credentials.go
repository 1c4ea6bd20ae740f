package simulators

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// DeviceCredential is one device's MQTT identity: DESIGN.md §3's username
// (the device id) and password (its token).
type DeviceCredential struct {
	ID    string
	Token string
}

// ReadCredentials reads device credentials, one device per line: its id
// and its token separated by whitespace, a comma or a colon (the output of
// `telegauge devices add` collected into a file, or a CSV export). Blank
// lines and lines starting with # are skipped.
func ReadCredentials(r io.Reader) ([]DeviceCredential, error) {
	var out []DeviceCredential
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.IndexAny(line, " \t,:")
		if i < 0 {
			return nil, fmt.Errorf("line %d: want a device id and a token", n)
		}
		id := strings.TrimSpace(line[:i])
		token := strings.TrimSpace(strings.TrimLeft(line[i:], " \t,:"))
		if id == "" || token == "" {
			return nil, fmt.Errorf("line %d: want a device id and a token", n)
		}
		if !validName(id) {
			return nil, fmt.Errorf("line %d: device id %q is outside the charset A-Z a-z 0-9 . _ -", n, id)
		}
		out = append(out, DeviceCredential{ID: id, Token: token})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read credentials: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no credentials found")
	}
	return out, nil
}

// ReadCredentialsFile is ReadCredentials of a file.
func ReadCredentialsFile(path string) ([]DeviceCredential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open credentials: %w", err)
	}
	defer f.Close()
	creds, err := ReadCredentials(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return creds, nil
}

// PatternPassword returns a Credentials function for DevicesConfig: device
// i's username is its id and its password is pattern with {id} replaced
// by the id and {i} by i, e.g. "secret-{id}".
func PatternPassword(pattern string, id func(i int) string) func(i int) (string, string) {
	return func(i int) (string, string) {
		d := id(i)
		p := strings.ReplaceAll(pattern, "{id}", d)
		p = strings.ReplaceAll(p, "{i}", strconv.Itoa(i))
		return d, p
	}
}
