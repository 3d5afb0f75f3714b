package gradient

// IsNone reports whether a codec spec asks for no codec: "" or "none",
// dense float32 models and updates. It is the one test of it in the
// project, for both directions.
func IsNone(spec string) bool { return spec == "" || spec == "none" }
