package motocheck

import (
	"net/http"
	"os"
	"testing"

	"github.com/impound-ir/impound/internal/testenv"
)

// resetMoto clears moto's state through its documented reset endpoint.
func resetMoto(t *testing.T, endpoint string) {
	t.Helper()
	resp, err := http.Post(endpoint+"/moto-api/reset", "application/json", nil)
	if err != nil {
		t.Fatalf("reset moto: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reset moto: %s", resp.Status)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	testenv.StopMoto()
	os.Exit(code)
}
