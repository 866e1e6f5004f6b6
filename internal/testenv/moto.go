package testenv

import (
	"bufio"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// privateMoto is a moto_server a test binary starts for itself, so that
// resetting it between tests cannot disturb other packages' tests running
// at the same time against the shared server scripts/testenv started, nor
// theirs this package's.
var privateMoto struct {
	once sync.Once
	url  string
	cmd  *exec.Cmd
	err  error
}

// Moto returns a moto_server endpoint the test binary may reset: its own
// when moto_server is installed (started on first use; stop it with
// StopMoto in TestMain), else the shared one scripts/testenv exports.
func Moto(t testing.TB) string {
	t.Helper()
	shared := Server(t, "IMPOUND_TEST_MOTO_ENDPOINT")
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		return shared
	}
	privateMoto.once.Do(func() { privateMoto.url, privateMoto.cmd, privateMoto.err = startMoto(bin) })
	if privateMoto.err != nil {
		t.Fatalf("start a private moto_server: %v", privateMoto.err)
	}
	return privateMoto.url
}

// StopMoto stops the moto_server Moto started, if any.
func StopMoto() {
	if privateMoto.cmd != nil {
		_ = privateMoto.cmd.Process.Kill()
		_ = privateMoto.cmd.Wait()
	}
}

// startMoto starts moto_server on a port the kernel picks and returns the
// address moto itself reports. Picking a free port first and passing it in
// would race with the many listeners and connections other test binaries
// open meanwhile: if moto lost that race, whatever took the port would be
// mistaken for it.
func startMoto(bin string) (string, *exec.Cmd, error) {
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", "0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	found := make(chan string, 1)
	go func() {
		// Werkzeug announces " * Running on http://127.0.0.1:PORT", then
		// logs every request; keep draining so moto never blocks on a
		// full pipe.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if _, url, ok := strings.Cut(sc.Text(), "Running on "); ok {
				select {
				case found <- strings.TrimSpace(url):
				default:
				}
			}
		}
		close(found)
	}()
	select {
	case url, ok := <-found:
		if !ok {
			_ = cmd.Wait()
			return "", nil, fmt.Errorf("moto_server exited before it listened (%v)", cmd.ProcessState)
		}
		for i := 0; i < 300; i++ {
			if resp, err := http.Get(url + "/moto-api/"); err == nil {
				resp.Body.Close()
				return url, cmd, nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		err = fmt.Errorf("moto_server at %s did not answer within 30 s", url)
	case <-time.After(60 * time.Second):
		err = fmt.Errorf("moto_server did not report its address within 60 s")
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return "", nil, err
}
