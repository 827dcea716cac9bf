/*
 * A cluster's pools and the monitors' word on them (survey.h).
 */
#include <errno.h>
#include <rados/librados.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "survey.h"

struct cv_survey {
    rados_t cluster;
};

int cv_survey_open(struct cv_survey **out, const struct cv_cluster_target *t, char *err,
                   size_t errlen)
{
    struct cv_survey *s = calloc(1, sizeof *s);
    if (!s)
        return cv_fail(err, errlen, -ENOMEM, "no memory");
    int rc = cv_cluster_connect(&s->cluster, t, err, errlen);
    if (rc) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void cv_survey_close(struct cv_survey *s)
{
    if (!s)
        return;
    rados_shutdown(s->cluster);
    free(s);
}

int cv_survey_pools(struct cv_survey *s, char *buf, size_t *len)
{
    /* librados ends the list with a second NUL, which *len does not count. */
    int need = rados_pool_list(s->cluster, buf, *len);
    if (need < 0)
        return need;
    if ((size_t)need > *len) {
        *len = (size_t)need;
        return -ERANGE;
    }
    *len = need > 0 ? (size_t)need - 1 : 0;
    return 0;
}

int cv_survey_mon_command(struct cv_survey *s, const char *command, char *out, size_t *len,
                          char *err, size_t errlen)
{
    const char *cmd[] = {command};
    char *answer = NULL, *status = NULL;
    size_t answer_len = 0, status_len = 0;
    int rc = rados_mon_command(s->cluster, cmd, 1, "", 0, &answer, &answer_len, &status,
                               &status_len);
    if (rc < 0) {
        snprintf(err, errlen, "the monitors refused %s: %.*s (%s)", command, (int)status_len,
                 status ? status : "", strerror(-rc));
    } else if (answer_len + 1 > *len) {
        rc = -ERANGE;
    } else {
        memcpy(out, answer, answer_len);
        out[answer_len] = '\0';
        rc = 0;
    }
    *len = answer_len + 1;
    if (answer)
        rados_buffer_free(answer);
    if (status)
        rados_buffer_free(status);
    return rc;
}
