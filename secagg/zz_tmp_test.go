package secagg
import "testing"
func TestX(t *testing.T){ for _, n := range []int{10, 50, 100} { c, ok := ChooseK(n, 0.479, 0.1, 30, 40); t.Log(n, c.K, c.T, ok) } }
