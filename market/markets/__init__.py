"""Markets: time zone, ISP length, gate closure rule, pricing rule, currency and order bounds."""
