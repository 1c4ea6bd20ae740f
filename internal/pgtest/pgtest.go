// Package pgtest gives tests a PostgreSQL schema of their own in the
// database named by TELEGAUGE_TEST_POSTGRES (which .ci/run starts and
// exports), so packages that run in parallel never see each other's rows.
package pgtest

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// Env names the variable holding the DSN of a PostgreSQL database the
// tests may create schemas in, such as
// postgres://telegauge:telegauge@127.0.0.1:5432/telegauge_test?sslmode=disable.
const Env = "TELEGAUGE_TEST_POSTGRES"

var nonName = regexp.MustCompile(`[^A-Za-z0-9]+`)

// URL returns the DSN of a fresh, empty schema in the test database,
// dropped when the test ends, or skips the test when no database is
// configured.
func URL(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv(Env)
	if dsn == "" {
		t.Skipf("PostgreSQL tests need %s, e.g. postgres://telegauge:telegauge@127.0.0.1:5432/telegauge_test?sslmode=disable", Env)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("%s must be a postgres:// URL: %v", Env, err)
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	name := strings.ToLower(nonName.ReplaceAllString(t.Name(), "_"))
	schema := fmt.Sprintf("t_%.40s_%s", name, hex.EncodeToString(rnd[:]))
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("open %s: %v", Env, err)
	}
	if _, err := db.Exec(`CREATE SCHEMA ` + schema); err != nil {
		_ = db.Close()
		t.Fatalf("create a test schema in %s: %v", Env, err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
		_ = db.Close()
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
