package inspect

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"text/tabwriter"

	"github.com/fedzip/fedzip/gradient"
)

// WriteTable writes in as aligned rows of name and value, under a line
// with the file, its kind and size.
func (in *Inspection) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "%s\t%s, %d bytes\n", in.File, in.Kind, in.Bytes)
	row := func(k, v string) { fmt.Fprintf(tw, "  %s\t%s\n", k, v) }
	for _, u := range in.Update {
		if len(in.Update) > 1 {
			fmt.Fprintf(tw, "message at byte %d\t%d bytes\n", u.Offset, u.Size)
		}
		u.rows(row)
	}
	if in.Model != nil {
		in.Model.rows(row)
	}
	if in.Device != nil {
		in.Device.rows(row)
	}
	return tw.Flush()
}

func (u *Update) rows(row func(k, v string)) {
	row("wire version", strconv.Itoa(u.WireVersion))
	kind := fmt.Sprintf("%s, %s values", u.Selection, u.Format)
	if u.Format == gradient.FormatCodes.String() {
		kind += fmt.Sprintf(" of %d bits", u.Bits)
		if u.Bucket > 0 {
			kind += fmt.Sprintf(", a scale per %d", u.Bucket)
		}
	}
	if u.Full {
		kind = "full model, " + kind
	}
	row("codec", kind)
	row("n, k", fmt.Sprintf("%d, %d (%.4g%% kept)", u.N, u.K, 100*float64(u.K)/float64(max(u.N, 1))))
	row("round / version", fmt.Sprintf("%d (base %d)", u.Round, u.Base))
	if u.Run != "" {
		row("run", u.Run)
	}
	for _, s := range u.Sections {
		row(s.Kind+" section", fmt.Sprintf("%d bytes, %s", s.Bytes, s.Coding))
	}
	row("bits per kept coordinate", fmt.Sprintf("%.3f indices + %.3f values = %.3f", u.IndexBits, u.ValueBits, u.IndexBits+u.ValueBits))
	row("crc-32c", crcText(u.CRC, u.CRCOK))
}

func (m *Model) rows(row func(k, v string)) {
	row("format version", strconv.Itoa(m.FormatVersion))
	row("model", fmt.Sprintf("%s, %d parameters", m.Model, m.Params))
	row("round, version", fmt.Sprintf("%d, %d", m.Round, m.Version))
	if m.Dataset != "" {
		row("dataset", m.Dataset)
	}
	for _, t := range m.Tensors {
		row("tensor "+t.Name, fmt.Sprint(t.Shape))
	}
	for _, k := range sortedKeys(m.Extra) {
		row(k, m.Extra[k])
	}
	row("crc-32c", crcText(m.CRC, m.CRCOK))
}

func (d *Device) rows(row func(k, v string)) {
	row("network", fmt.Sprintf("%d inputs, %d classes, %d layers, %d parameters", d.Input, d.Classes, d.Layers, d.Params))
	for _, k := range sortedKeys(d.Meta) {
		row("meta "+k, d.Meta[k])
	}
	for _, t := range d.Tensors {
		enc := t.Encoding
		if t.Coding != "" {
			enc += fmt.Sprintf(" %d-bit %s", t.Bits, t.Coding)
		}
		layout := "dense"
		if t.Sparse {
			layout = fmt.Sprintf("sparse %d of %d (positions %d B)", t.Stored, prod(t.Shape), t.Index)
		}
		row("tensor "+t.Name, fmt.Sprintf("%v %s, %s, values %d B, %d B in all", t.Shape, layout, enc, t.Values, t.Total))
	}
	row("crc-32c", crcText(d.CRC, d.CRCOK))
	row("signature", d.Signature)
}

func crcText(crc string, ok bool) string {
	if ok {
		return crc + " ok"
	}
	return crc + " MISMATCH"
}

func prod(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
