/* fasa report: Markdown tables from a results file, one section per task
 * found in it. Rows are configurations (full, oracle, fasa-N_tip, then the
 * other methods), columns are budgets; the best non-oracle value of each
 * column is in bold. */
#ifndef FASA_EVAL_REPORT_H
#define FASA_EVAL_REPORT_H

#include <stdio.h>

#include <cjson/cJSON.h>

#include "fasa.h"

/* results: the array eval_results_read returns. */
fasa_status eval_report_write(const cJSON *results, FILE *out);

#endif
