//! Sizes as cgroup files and their users write them: `256M`, `1.5G`,
//! `65536K`, bytes; K, M, G, T are powers of 1024, as the kernel's
//! `memparse()` takes them.

/// `text` in bytes: digits, at most three decimals, an optional unit
/// (K, M, G, T, with or without `iB`/`B`, any case); `None` if it is no
/// such size or does not fit in 64 bits.
pub fn parse(text: &str) -> Option<u64> {
    let upper = text.trim().to_ascii_uppercase();
    let number = upper.strip_suffix("IB").or_else(|| upper.strip_suffix('B')).unwrap_or(&upper);
    let (digits, shift) = match number.chars().last()? {
        'K' => (&number[..number.len() - 1], 10),
        'M' => (&number[..number.len() - 1], 20),
        'G' => (&number[..number.len() - 1], 30),
        'T' => (&number[..number.len() - 1], 40),
        c if c.is_ascii_digit() => (number, 0),
        _ => return None,
    };
    // Decimal digits by hand: f64 would take `inf` and `1e3`.
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || whole.len() > 12
        || frac.len() > 3
        || !whole.chars().chain(frac.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let frac_value: u64 = if frac.is_empty() { 0 } else { frac.parse().ok()? };
    let scale = 10u64.pow(frac.len() as u32);
    whole.parse::<u64>().ok()?.checked_mul(1 << shift)?.checked_add((frac_value << shift) / scale)
}

/// `268435456` as `256M`; bytes that are no whole KiB as they are.
pub fn format(b: u64) -> String {
    for (unit, size) in [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)] {
        if b >= size && b.is_multiple_of(size) {
            return format!("{}{unit}", b / size);
        }
    }
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_the_kernel_takes_them() {
        assert_eq!(parse("256M"), Some(256 << 20));
        assert_eq!(parse("256MiB"), Some(256 << 20));
        assert_eq!(parse("256mb"), Some(256 << 20));
        assert_eq!(parse("1.5G"), Some(3 << 29));
        assert_eq!(parse("65536k"), Some(64 << 20));
        assert_eq!(parse("4096"), Some(4096));
        for bad in ["", "M", "-1M", "1e3M", "inf", "1.2345G", "1P", "x", ".5M", "1..5M", "9999999999999"] {
            assert_eq!(parse(bad), None, "{bad:?} accepted");
        }
        assert_eq!(parse("99999999T"), None);
        assert_eq!(format(256 << 20), "256M");
        assert_eq!(format(3 << 29), "1536M");
        assert_eq!(format(4097), "4097");
    }
}
