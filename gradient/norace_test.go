//go:build !race

package gradient

const raceEnabled = false
