//! Messages from the library (`tracing`) on stderr: information as plain lines, warnings and
//! errors prefixed so they stand out. `--quiet` keeps warnings and errors, `--verbose` adds
//! debug messages, and `RUST_LOG` (e.g. `nextdet_engine=debug,info`) sets the filter in full.
//! In a data-parallel run only rank 0 shows information; every rank shows warnings and errors,
//! the other ranks' prefixed with `rank R: `.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `warning: ...` / `error: ...` / plain text.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let group = nextdet_dist::world();
        if !group.is_main() {
            if *event.metadata().level() > Level::WARN {
                // only rank 0 informs (an event formatted to nothing is not written)
                return Ok(());
            }
            write!(writer, "rank {}: ", group.rank())?;
        }
        match *event.metadata().level() {
            Level::ERROR => write!(writer, "error: ")?,
            Level::WARN => write!(writer, "warning: ")?,
            Level::DEBUG | Level::TRACE => write!(writer, "debug: ")?,
            Level::INFO => {}
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the stderr subscriber once per process.
pub fn init(quiet: bool, verbose: bool) {
    let default = if quiet {
        "warn"
    } else if verbose {
        "debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).event_format(Plain).try_init();
}
