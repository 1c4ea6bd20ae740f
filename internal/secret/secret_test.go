package secret

import (
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTokenAndHash(t *testing.T) {
	tok, err := NewToken()
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(tok, "tg_"))
	require.Len(t, tok, 46)
	other, err := NewToken()
	require.NoError(t, err)
	require.NotEqual(t, tok, other)

	h, err := Hash(tok)
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$"), h)
	h2, err := Hash(tok)
	require.NoError(t, err)
	require.NotEqual(t, h, h2, "salted")

	for _, tc := range []struct {
		hash, token string
		ok          bool
		err         error
	}{
		{h, tok, true, nil},
		{h2, tok, true, nil},
		{h, other, false, nil},
		{h, "", false, nil},
		{"", tok, false, nil},
		{"plain", tok, false, ErrMalformedHash},
		{"$argon2id$v=19$m=19456,t=2,p=1$!!$xx", tok, false, ErrMalformedHash},
		{"$argon2id$v=18$m=19456,t=2,p=1$c2FsdA$a2V5", tok, false, ErrMalformedHash},
		{"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdA$a2V5", tok, false, ErrMalformedHash},
		{"$bcrypt$v=19$m=19456,t=2,p=1$c2FsdA$a2V5", tok, false, ErrMalformedHash},
	} {
		ok, err := Verify(tc.hash, tc.token)
		require.Equal(t, tc.ok, ok, "%q %q", tc.hash, tc.token)
		require.ErrorIs(t, err, tc.err)
	}
}

func TestVerifierRemembersSuccessOnly(t *testing.T) {
	tok, err := NewToken()
	require.NoError(t, err)
	h, err := Hash(tok)
	require.NoError(t, err)
	var v Verifier
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := v.Verify(h, tok)
			require.NoError(t, err)
			require.True(t, ok)
			ok, err = v.Verify(h, tok+"x")
			require.NoError(t, err)
			require.False(t, ok)
		}()
	}
	wg.Wait()
	require.Len(t, v.ok, 1)
	// A new hash for the same token (re-issued credential) is checked
	// afresh.
	h2, err := Hash("another")
	require.NoError(t, err)
	ok, err := v.Verify(h2, tok)
	require.NoError(t, err)
	require.False(t, ok)
}
