/* noodle-harness metrics (see metrics_cmd.c). */
#ifndef NOODLE_HARNESS_METRICS_CMD_H
#define NOODLE_HARNESS_METRICS_CMD_H

#include "noodle/error.h"

/* Run the command on argv (the arguments after "metrics"); prints the
 * exposition on success. Returns 0 or a catalogue code (err filled). */
int noodle_harness_metrics(int argc, char **argv, noodle_error *err);

#endif
