//! The seed's quantities: memory as Docker writes it (`256m`, `1G`, bytes) and CPU in cores.
//! Each error is the reason, for a person; the caller names the field.

use serde_json::Value;

use super::{json_shown, quoted};
use crate::app::{MAX_CPU, MAX_MEMORY_MB};

const MIB: u128 = 1 << 20;
/// Most digits a memory size may have after its point; more would say nothing a byte can.
const MAX_DECIMALS: usize = 18;

/// Memory in MiB, rounded up. A string is a number (fractions allowed) with an optional unit
/// `k`, `m`, `g`, `t` or `p`, each a power of 1024 whatever its case (as Docker reads `256m` and
/// `1G`), optionally followed by `i` and `b` (`512Mi`, `2GiB`); without a unit, bytes. A number
/// is bytes.
pub(super) fn memory_mb(value: &Value) -> Result<u64, String> {
    let bytes = match value {
        Value::String(text) => memory_bytes(text)?,
        Value::Number(n) => match n.as_u64() {
            Some(bytes) => u128::from(bytes),
            None => {
                return Err(format!(
                    "must be a whole number of bytes or a size such as 256m (got {n})"
                ));
            }
        },
        other => {
            return Err(format!(
                "must be a size such as \"256m\" or \"1G\", or bytes (got {})",
                json_shown(other)
            ));
        }
    };
    if bytes == 0 {
        return Err(format!("must be more than 0 (got {})", json_shown(value)));
    }
    let mib = bytes.div_ceil(MIB);
    match u64::try_from(mib) {
        Ok(mib) if mib <= MAX_MEMORY_MB => Ok(mib),
        _ => Err(too_much_memory(value)),
    }
}

fn too_much_memory(value: &Value) -> String {
    format!(
        "at most {MAX_MEMORY_MB} MiB (1T) (got {})",
        json_shown(value)
    )
}

/// Bytes that `text` names, exactly (fractions of a unit are rounded up to a byte).
fn memory_bytes(text: &str) -> Result<u128, String> {
    let not_a_size = || {
        format!(
            "'{}' is not a size: a number with an optional unit k, m, g or t (powers of 1024), \
             such as 256m, 1G, 512Mi or 268435456 (bytes)",
            quoted(text)
        )
    };
    let too_large = || too_much_memory(&Value::String(text.to_string()));
    let trimmed = text.trim();
    let number_len = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let fraction_ok = !number.ends_with('.') && !fraction.contains('.');
    if whole.is_empty() || !fraction_ok {
        return Err(not_a_size());
    }
    let power = unit_power(unit.trim_start()).ok_or_else(not_a_size)?;
    if fraction.len() > MAX_DECIMALS {
        return Err(format!(
            "'{}': at most {MAX_DECIMALS} digits after the point",
            quoted(text)
        ));
    }
    // bytes = ceil((whole.fraction) × 1024^power), in integers: no float rounding, no overflow.
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 38 {
        return Err(too_large());
    }
    let mantissa: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| too_large())?
    };
    let scale = u32::try_from(fraction.len())
        .ok()
        .and_then(|f| 10u128.checked_pow(f))
        .ok_or_else(too_large)?;
    let unit = 1024u128.checked_pow(power).ok_or_else(too_large)?;
    let scaled = mantissa.checked_mul(unit).ok_or_else(too_large)?;
    Ok(scaled.div_ceil(scale))
}

/// The power of 1024 that a unit means: none or `b` is 0, `k`/`kb`/`ki`/`kib` is 1, and so on
/// to `p`, in any case.
fn unit_power(unit: &str) -> Option<u32> {
    let unit = unit.to_ascii_lowercase();
    let mut chars = unit.chars();
    let power = match chars.next() {
        None => return Some(0),
        Some('b') => return chars.next().is_none().then_some(0),
        Some('k') => 1,
        Some('m') => 2,
        Some('g') => 3,
        Some('t') => 4,
        Some('p') => 5,
        Some(_) => return None,
    };
    let rest = chars.as_str();
    matches!(rest, "" | "i" | "b" | "ib").then_some(power)
}

/// Cores: a number, or a string of one (`"0.5"`), or thousandths as Kubernetes writes them
/// (`"500m"`). More than 0 and at most [`MAX_CPU`].
pub(super) fn cpu(value: &Value) -> Result<f64, String> {
    let cores = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(text) => cores(text.trim()),
        _ => None,
    };
    let Some(cores) = cores else {
        return Err(format!(
            "must be cores, such as \"0.5\" or 2 (got {})",
            json_shown(value)
        ));
    };
    if !cores.is_finite() || cores <= 0.0 || cores > MAX_CPU {
        return Err(format!(
            "must be more than 0 and at most {MAX_CPU} cores (got {})",
            json_shown(value)
        ));
    }
    Ok(cores)
}

/// `"1.5"` or `"500m"` (`"-1"` too, for the caller to refuse); `None` for anything else
/// (`"inf"`, `"1e3"`, `"0x10"`).
fn cores(text: &str) -> Option<f64> {
    // A sign is read, so that "-1" is refused as less than 0 rather than as not a number.
    let (sign, text) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text),
    };
    let (number, divisor) = match text.strip_suffix('m') {
        Some(millis) => (millis, 1000.0),
        None => (text, 1.0),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let decimal = !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && !number.ends_with('.');
    if !decimal {
        return None;
    }
    number.parse::<f64>().ok().map(|n| sign * n / divisor)
}
