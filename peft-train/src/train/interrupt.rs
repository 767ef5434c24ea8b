//! Ctrl-C and SIGTERM: the run in progress stops after its current step and saves what it
//! has; the command then exits with status 130.

use std::path::PathBuf;
use std::sync::Mutex;

use burn::train::Interrupter;

/// A run stopped by Ctrl-C or SIGTERM, after saving the adapter as it was: the binary says
/// so and exits with status 130, so that scripts can tell it from a finished run.
#[derive(Debug)]
pub struct Interrupted {
    pub saved: PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted: the adapter as it was is in {}; `--resume` continues from the last \
             epoch checkpoint",
            self.saved.display()
        )
    }
}

impl std::error::Error for Interrupted {}

/// The training run Ctrl-C stops: the latest one (the demo trains several in one process,
/// and a process has only one signal handler).
static CURRENT_RUN: Mutex<Option<Interrupter>> = Mutex::new(None);

pub(crate) fn install_ctrl_c(interrupter: Interrupter) {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    *CURRENT_RUN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(interrupter);
    INSTALL.call_once(|| {
        // A second Ctrl-C (or a kill) ends the process; checkpoints already written survive.
        let result = ctrlc::set_handler(|| {
            eprintln!(
                "\ninterrupt: finishing the current step, then saving; press Ctrl-C again to quit now"
            );
            let current = CURRENT_RUN
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            match current {
                Some(run) if !run.should_stop() => run.stop(Some("interrupted by the user")),
                _ => std::process::exit(130),
            }
        });
        if let Err(err) = result {
            tracing::warn!("cannot install the Ctrl-C handler: {err}");
        }
    });
}
