//go:build !linux

package vault

import (
	"errors"
	"os"
)

// openFilesystem returns nil, nil: without syncfs(2), each file of a batch
// is fsynced on its own.
func openFilesystem(dir string) (*os.File, error) { return nil, nil }

// syncFilesystem is never called when openFilesystem returns nil.
func syncFilesystem(f *os.File) error { return errors.New("vault: syncfs is not available") }

// ordersMetadata is false where impound cannot tell: batches are then
// stored one object at a time.
func ordersMetadata(dir string) bool { return false }
