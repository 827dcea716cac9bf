/*
 * A cluster as a whole, for the controller's listings and GetCapacity: which pools it has
 * and what the monitors say of them (`ceph df`). One connection, until cv_survey_close.
 */
#ifndef CEPH_SURVEY_H
#define CEPH_SURVEY_H
#include <stddef.h>

#include "cluster.h"

struct cv_survey;

/* Connected; 0, or -errno with a message in err (which never holds the key). */
int cv_survey_open(struct cv_survey **out, const struct cv_cluster_target *t, char *err,
                   size_t errlen);
void cv_survey_close(struct cv_survey *s);
/* The pools' names, each NUL-terminated, into buf (*len bytes); on return *len is what they
 * take. 0 or -errno (-ERANGE: buf is too small; call again with *len bytes). */
int cv_survey_pools(struct cv_survey *s, char *buf, size_t *len);
/* The monitors' answer to `command` (a JSON object, as `ceph --format json` sends it) into
 * out (*len bytes, NUL-terminated); on return *len is what it takes with the NUL. 0 or
 * -errno with the monitors' message in err (-ERANGE: out is too small). */
int cv_survey_mon_command(struct cv_survey *s, const char *command, char *out, size_t *len,
                          char *err, size_t errlen);
#endif
