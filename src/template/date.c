/*
 * date.c
 *		The date filter of the template engine: LiquidJS's input rules (epoch
 *		seconds as numbers or digit strings, "now"/"today", ISO 8601 text) and
 *		its strftime.
 *
 * Time zone: UTC, unless the context's subscriber.timezone names an IANA zone
 * (an unknown one is ignored), or the filter's second argument names one
 * (LiquidJS's timezoneOffset argument; a number is minutes west of UTC).
 * Text without an offset ("2024-01-05T10:00:00") is read as UTC, as LiquidJS
 * reads it on a server running in UTC.  Other text LiquidJS hands to
 * JavaScript's Date parser (RFC 2822 and the like) is not read: the filter
 * returns its input, as LiquidJS does for text it cannot read (README).
 */
#include "postgres.h"

#include <ctype.h>
#include <math.h>

#include "pgtime.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "template/template_int.h"

#define MS_PER_DAY	86400000.0

typedef struct DateParts
{
	double		ms;				/* the instant, milliseconds since 1970 UTC */
	int			offset_min;		/* display zone: minutes west of UTC (JS getTimezoneOffset) */
	const char *zone_name;		/* %Z: the zone's name, or "" */
	/* wall clock in the display zone */
	int			year;
	int			month;			/* 0-11 */
	int			day;			/* 1-31 */
	int			hour;
	int			min;
	int			sec;
	int			msec;
	int			wday;			/* 0 = Sunday */
} DateParts;

static const char *const month_names[] = {
	"January", "February", "March", "April", "May", "June", "July", "August",
	"September", "October", "November", "December"
};
static const char *const day_names[] = {
	"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"
};

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static double
days_from_civil(double y, int m, int d)
{
	double		era;
	double		yoe;
	double		doy;
	double		doe;

	y -= m <= 2;
	era = floor(y / 400);
	yoe = y - era * 400;
	doy = floor((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5) + d - 1;
	doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy;
	return era * 146097 + doe - 719468;
}

/* Civil date of days since 1970-01-01. */
static void
civil_from_days(double z, int *y, int *m, int *d)
{
	double		era;
	double		doe;
	double		yoe;
	double		doy;
	double		mp;

	z += 719468;
	era = floor(z / 146097);
	doe = z - era * 146097;
	yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365);
	doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100));
	mp = floor((5 * doy + 2) / 153);
	*d = (int) (doy - floor((153 * mp + 2) / 5) + 1);
	*m = (int) (mp < 10 ? mp + 3 : mp - 9);
	*y = (int) (yoe + era * 400 + (*m <= 2));
}

/* Read n digits at s[*i]; false if they are not there. */
static bool
digits(const char *s, int len, int *i, int n, int *out)
{
	int			v = 0;
	int			k;

	for (k = 0; k < n; k++)
	{
		if (*i + k >= len || s[*i + k] < '0' || s[*i + k] > '9')
			return false;
		v = v * 10 + (s[*i + k] - '0');
	}
	*i += n;
	*out = v;
	return true;
}

/*
 * Parse ISO 8601 text as JavaScript's Date does: YYYY[-MM[-DD]] (UTC), or
 * with THH:mm[:ss[.sss]] (or a space for the T) and Z/±HH:mm (no offset: UTC).
 */
static bool
parse_iso(const char *s, int len, double *ms)
{
	int			i = 0;
	int			y;
	int			mo = 1;
	int			d = 1;
	int			h = 0;
	int			mi = 0;
	int			sec = 0;
	double		frac = 0;
	int			off = 0;
	int			sign = 1;
	bool		ext = false;

	if (len > 0 && (s[0] == '+' || s[0] == '-'))
	{
		sign = s[0] == '-' ? -1 : 1;
		i = 1;
		if (!digits(s, len, &i, 6, &y))
			return false;
		ext = true;
	}
	else if (!digits(s, len, &i, 4, &y))
		return false;
	if (ext)
		y *= sign;
	if (i < len && s[i] == '-')
	{
		i++;
		if (!digits(s, len, &i, 2, &mo) || mo < 1 || mo > 12)
			return false;
		if (i < len && s[i] == '-')
		{
			i++;
			if (!digits(s, len, &i, 2, &d) || d < 1 || d > 31)
				return false;
		}
	}
	if (i < len && (s[i] == 'T' || s[i] == 't' || s[i] == ' '))
	{
		i++;
		if (!digits(s, len, &i, 2, &h) || i >= len || s[i] != ':')
			return false;
		i++;
		if (!digits(s, len, &i, 2, &mi))
			return false;
		if (i < len && s[i] == ':')
		{
			i++;
			if (!digits(s, len, &i, 2, &sec))
				return false;
			if (i < len && (s[i] == '.' || s[i] == ','))
			{
				double		scale = 0.1;

				i++;
				if (i >= len || s[i] < '0' || s[i] > '9')
					return false;
				while (i < len && s[i] >= '0' && s[i] <= '9')
				{
					frac += (s[i] - '0') * scale;
					scale /= 10;
					i++;
				}
			}
		}
		if (h > 24 || mi > 59 || sec > 59 || (h == 24 && (mi || sec || frac)))
			return false;
		if (i < len && (s[i] == 'Z' || s[i] == 'z'))
			i++;
		else if (i < len && (s[i] == '+' || s[i] == '-'))
		{
			int			oh;
			int			om;
			int			osign = s[i] == '-' ? -1 : 1;

			i++;
			if (!digits(s, len, &i, 2, &oh))
				return false;
			if (i < len && s[i] == ':')
				i++;
			if (!digits(s, len, &i, 2, &om) || oh > 23 || om > 59)
				return false;
			off = osign * (oh * 60 + om);
		}
	}
	if (i != len)
		return false;
	{
		int			mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

		if (d > mdays[mo - 1])
			return false;
		if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
			return false;
	}
	*ms = days_from_civil(y, mo, d) * MS_PER_DAY + h * 3600000.0 + mi * 60000.0 +
		sec * 1000.0 + floor(frac * 1000 + 1e-9) - off * 60000.0;
	return fabs(*ms) <= 8.64e15;
}

/*
 * Is name a zone of the tz database (IANA names)?  pg_tzset also takes POSIX
 * rules ("<A1>0", "ABC5DEF") and keeps every zone it loads, about 23 kB each,
 * for the life of the process: from a payload or a subscriber's timezone that
 * grows a worker's memory without end.  A POSIX rule needs a digit (its UTC
 * offset), and the only tz database names with digits are the GMT offsets and
 * four US zones; every other name with a digit is refused, and so are the
 * posix/ and right/ copies of the database.  What pg_tzset can then load and
 * keep is the database's own few hundred zones.
 */
static bool
zone_name_acceptable(const char *name)
{
	static const char *const with_digits[] = {"EST5EDT", "CST6CDT", "MST7MDT", "PST8PDT"};
	size_t		len = strlen(name);
	const char *p;
	int			i;

	if (len == 0 || len > TZ_STRLEN_MAX)
		return false;
	if (pg_strncasecmp(name, "posix/", 6) == 0 || pg_strncasecmp(name, "right/", 6) == 0)
		return false;
	for (p = name; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '/' || *p == '_' || *p == '-' || *p == '+'))
			return false;
	if (strpbrk(name, "0123456789") == NULL)
		return true;
	for (i = 0; i < lengthof(with_digits); i++)
		if (pg_strcasecmp(name, with_digits[i]) == 0)
			return true;
	/* GMT, GMT0, GMT+5, Etc/GMT-14 ... */
	p = name;
	if (pg_strncasecmp(p, "Etc/", 4) == 0)
		p += 4;
	if (pg_strncasecmp(p, "GMT", 3) != 0)
		return false;
	p += 3;
	if (*p == '+' || *p == '-')
		p++;
	if (!isdigit((unsigned char) p[0]))
		return false;
	if (p[1] == '\0')
		return true;
	return isdigit((unsigned char) p[1]) && p[2] == '\0' && (p[0] - '0') * 10 + (p[1] - '0') <= 14;
}

/* Minutes west of UTC of a named zone at an instant; false for an unknown zone. */
static bool
zone_offset(const char *name, double ms, int *offset)
{
	pg_tz	   *tz;
	pg_time_t	t = (pg_time_t) floor(ms / 1000);
	struct pg_tm *tm;

	if (!zone_name_acceptable(name))
		return false;
	tz = pg_tzset(name);
	if (tz == NULL)
		return false;
	tm = pg_localtime(&t, tz);
	if (tm == NULL)
		return false;
	*offset = (int) (-tm->tm_gmtoff / 60);
	return true;
}

/* Fill the wall-clock fields of the display zone. */
static void
split_date(DateParts *p)
{
	double		local = p->ms - p->offset_min * 60000.0;
	double		days = floor(local / MS_PER_DAY);
	double		rem = local - days * MS_PER_DAY;
	int			msday = (int) rem;

	civil_from_days(days, &p->year, &p->month, &p->day);
	p->month -= 1;
	p->hour = msday / 3600000;
	p->min = msday / 60000 % 60;
	p->sec = msday / 1000 % 60;
	p->msec = msday % 1000;
	p->wday = (int) (((long long) days % 7 + 11) % 7);
}

/* Day of the year, 1-based. */
static int
day_of_year(DateParts *p)
{
	return (int) (days_from_civil(p->year, p->month + 1, p->day) -
				  days_from_civil(p->year, 1, 1)) + 1;
}

/* Append n padded to width with c ('-' stays in front of zeros). */
static void
append_padded(StringInfo buf, const char *s, int width, char c)
{
	int			len = strlen(s);
	int			i;

	if (c == '0' && s[0] == '-')
	{
		appendStringInfoChar(buf, '-');
		s++;
		len--;
		width--;
	}
	for (i = len; i < width; i++)
		appendStringInfoChar(buf, c);
	appendStringInfoString(buf, s);
}

/* The ±HHMM (±HH:MM with colon) of the display zone. */
static char *
offset_text(DateParts *p, bool colon)
{
	int			n = abs(p->offset_min);

	return psprintf("%c%02d%s%02d", p->offset_min > 0 ? '-' : '+', n / 60, colon ? ":" : "", n % 60);
}

/* strftime as LiquidJS implements it (en-US names). */
static void
strftime_liquid(RenderState *st, StringInfo buf, DateParts *p, const char *f, int flen)
{
	int			i = 0;

	while (i < flen)
	{
		int			start = i;
		bool		fl_dash = false,
					fl_under = false,
					fl_zero = false,
					fl_caret = false,
					fl_hash = false,
					fl_colon = false;
		int			width = 0;
		bool		has_width = false;
		char		conv;
		char	   *ret = NULL;
		int			pad = 0;
		char		padc;
		int			h12;

		if (f[i] != '%')
		{
			appendStringInfoChar(buf, f[i++]);
			continue;
		}
		i++;
		while (i < flen && strchr("-_0^#:", f[i]) != NULL && f[i] != '\0')
		{
			fl_dash |= f[i] == '-';
			fl_under |= f[i] == '_';
			fl_zero |= f[i] == '0';
			fl_caret |= f[i] == '^';
			fl_hash |= f[i] == '#';
			fl_colon |= f[i] == ':';
			i++;
		}
		while (i < flen && f[i] >= '0' && f[i] <= '9')
		{
			has_width = true;
			width = Min(width * 10 + (f[i] - '0'), TEMPLATE_MAX_OUTPUT_BYTES + 1);
			i++;
		}
		if (i < flen && (f[i] == 'E' || f[i] == 'O') && i + 1 < flen && f[i + 1] != '\n' && f[i + 1] != '\r')
			i++;
		if (i >= flen || f[i] == '\n' || f[i] == '\r')
		{
			/* no conversion character: the "%" is text */
			appendStringInfoChar(buf, '%');
			i = start + 1;
			continue;
		}
		conv = f[i++];
		h12 = p->hour % 12 == 0 ? 12 : p->hour % 12;
		switch (conv)
		{
			case 'a':
				ret = pnstrdup(day_names[p->wday], 3);
				break;
			case 'A':
				ret = pstrdup(day_names[p->wday]);
				break;
			case 'b':
			case 'h':
				ret = pnstrdup(month_names[p->month], 3);
				break;
			case 'B':
				ret = pstrdup(month_names[p->month]);
				break;
			case 'c':
				ret = psprintf("%d/%d/%d, %d:%02d:%02d %s", p->month + 1, p->day, p->year,
							   h12, p->min, p->sec, p->hour < 12 ? "AM" : "PM");
				break;
			case 'C':
				ret = psprintf("%d", (int) floor(p->year / 100.0));
				pad = 2;
				break;
			case 'd':
				ret = psprintf("%d", p->day);
				pad = 2;
				break;
			case 'e':
				ret = psprintf("%d", p->day);
				pad = 2;
				break;
			case 'H':
			case 'k':
				ret = psprintf("%d", p->hour);
				pad = 2;
				break;
			case 'I':
			case 'l':
				ret = psprintf("%d", h12);
				pad = 2;
				break;
			case 'j':
				ret = psprintf("%d", day_of_year(p));
				pad = 3;
				break;
			case 'L':
				ret = psprintf("%d", p->msec);
				pad = 3;
				break;
			case 'm':
				ret = psprintf("%d", p->month + 1);
				pad = 2;
				break;
			case 'M':
				ret = psprintf("%d", p->min);
				pad = 2;
				break;
			case 'N':
				{
					int			w = has_width && width > 0 ? width : 9;
					char		ms[4];
					StringInfoData n;
					int			k;

					snprintf(ms, sizeof(ms), "%03d", p->msec);
					initStringInfo(&n);
					appendBinaryStringInfo(&n, ms, Min(w, 3));
					tpl_reserve(st, w);
					for (k = 3; k < w; k++)
						appendStringInfoChar(&n, '0');
					ret = n.data;
				}
				break;
			case 'p':
				ret = pstrdup(p->hour < 12 ? "AM" : "PM");
				break;
			case 'P':
				ret = pstrdup(p->hour < 12 ? "am" : "pm");
				break;
			case 'q':
				ret = pstrdup((p->day >= 11 && p->day <= 13) ? "th" : p->day % 10 == 1 ? "st" :
							  p->day % 10 == 2 ? "nd" : p->day % 10 == 3 ? "rd" : "th");
				break;
			case 's':
				ret = psprintf("%.0f", floor(p->ms / 1000));
				break;
			case 'S':
				ret = psprintf("%d", p->sec);
				pad = 2;
				break;
			case 'u':
				ret = psprintf("%d", p->wday == 0 ? 7 : p->wday);
				break;
			case 'U':
			case 'W':
				{
					int			start_day = conv == 'U' ? 0 : 1;
					int			since = (p->wday - start_day + 7) % 7;

					ret = psprintf("%d", (day_of_year(p) - 1 - since + 7) / 7);
					pad = 2;
				}
				break;
			case 'w':
				ret = psprintf("%d", p->wday);
				break;
			case 'x':
				ret = psprintf("%d/%d/%d", p->month + 1, p->day, p->year);
				break;
			case 'X':
				ret = psprintf("%d:%02d:%02d %s", h12, p->min, p->sec, p->hour < 12 ? "AM" : "PM");
				break;
			case 'y':
				ret = psprintf("%d", ((p->year % 100) + 100) % 100);
				pad = 2;
				break;
			case 'Y':
				ret = psprintf("%d", p->year);
				pad = 4;
				break;
			case 'z':
				ret = offset_text(p, fl_colon);
				break;
			case 'Z':
				ret = p->zone_name[0] ? pstrdup(p->zone_name) : offset_text(p, fl_colon);
				break;
			case 't':
				ret = pstrdup("\t");
				break;
			case 'n':
				ret = pstrdup("\n");
				break;
			case '%':
				ret = pstrdup("%");
				break;
			default:
				{
					/* unknown conversion: the text as written (a whole character) */
					int			clen = utf8_char_len(f + i - 1, flen - i + 1);

					appendBinaryStringInfo(buf, f + start, i - 1 - start + clen);
					i += clen - 1;
					continue;
				}
		}
		padc = strchr("aAbBceklpP", conv) != NULL ? ' ' : '0';
		if (has_width && width > 0)
			pad = width;
		if (fl_caret)
		{
			char	   *c;

			for (c = ret; *c; c++)
				*c = pg_ascii_toupper(*c);
		}
		else if (fl_hash)
		{
			char	   *c;
			bool		lower = false;

			for (c = ret; *c; c++)
				lower |= (*c >= 'a' && *c <= 'z');
			for (c = ret; *c; c++)
				*c = lower ? pg_ascii_toupper(*c) : pg_ascii_tolower(*c);
		}
		if (fl_under)
			padc = ' ';
		else if (fl_zero)
			padc = '0';
		if (fl_dash)
			pad = 0;
		if (pad > TEMPLATE_MAX_OUTPUT_BYTES)
			tpl_fail_limit(st, "date: a width of %d is over the output limit", pad);
		tpl_reserve(st, pad + strlen(ret));
		append_padded(buf, ret, pad, padc);
	}
}

/* The subscriber's time zone from the context (subscriber.timezone), or NULL. */
static const char *
subscriber_zone(RenderState *st)
{
	JsonbValue	jv;
	JsonbValue	tz;

	if (st->root == NULL ||
		!getKeyJsonValueFromContainer(st->root, "subscriber", 10, &jv) ||
		jv.type != jbvBinary || !JsonContainerIsObject(jv.val.binary.data) ||
		!getKeyJsonValueFromContainer(jv.val.binary.data, "timezone", 8, &tz) ||
		tz.type != jbvString || tz.val.string.len == 0 || tz.val.string.len > TZ_STRLEN_MAX)
		return NULL;
	return pnstrdup(tz.val.string.val, tz.val.string.len);
}

/* date(v, format, timezone): LiquidJS's date filter. */
TplValue
tpl_date_filter(RenderState *st, TplValue v, TplValue *args, int nargs)
{
	TplValue	x = tv_to_value(v);
	TplValue	format = nargs > 0 ? tv_to_value(args[0]) : tv_undef();
	TplValue	zone = nargs > 1 ? tv_to_value(args[1]) : tv_undef();
	DateParts	p = {0};
	StringInfoData buf;
	TplValue	f;
	int			i;

	tpl_spend(st, WORK_PER_STEP);
	if (x.kind == TV_UNDEF || x.kind == TV_NULL)
		return v;
	if (x.kind == TV_STR && ((x.len == 3 && memcmp(x.str, "now", 3) == 0) ||
							 (x.len == 5 && memcmp(x.str, "today", 5) == 0)))
	{
		TimestampTz now = GetCurrentTimestamp();

		p.ms = floor((double) now / 1000) + (double) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * MS_PER_DAY;
	}
	else if (x.kind == TV_NUM)
		p.ms = x.num * 1000;
	else if (x.kind == TV_BOOL)
		p.ms = x.b ? 1 : 0;		/* new Date(true) */
	else if (x.kind == TV_ARR)
	{
		/* new Date(array) reads String(array) as a date */
		StringInfoData text;

		initStringInfo(&text);
		tv_js_string(st, &text, x);
		if (!parse_iso(text.data, text.len, &p.ms))
			return v;
	}
	else if (x.kind == TV_STR)
	{
		bool		all_digits = x.len > 0;

		for (i = 0; i < x.len; i++)
			all_digits &= x.str[i] >= '0' && x.str[i] <= '9';
		if (all_digits)
			p.ms = tv_string_to_number(x.str, x.len) * 1000;
		else if (!parse_iso(x.str, x.len, &p.ms))
			return v;
	}
	else
		return v;
	/* JavaScript dates hold whole milliseconds within ±8.64e15 */
	if (isnan(p.ms) || fabs(p.ms) > 8.64e15)
		return v;
	p.ms = trunc(p.ms) + 0.0;

	p.zone_name = "UTC";
	if (zone.kind == TV_NUM)
	{
		p.offset_min = (int) zone.num;
		p.zone_name = "";
	}
	else if (zone.kind == TV_STR)
	{
		char	   *name = pnstrdup(zone.str, zone.len);

		if (!zone_offset(name, p.ms, &p.offset_min))
			tpl_fail(st, "date: invalid time zone \"%s\"", name);
		p.zone_name = name;
	}
	else
	{
		const char *name = subscriber_zone(st);

		if (name != NULL && zone_offset(name, p.ms, &p.offset_min))
			p.zone_name = name;
	}
	split_date(&p);

	f = tv_is_nil(format) ? tv_cstr("%A, %B %-e, %Y at %-l:%M %P %z") : tv_stringify_value(st, format);
	initStringInfo(&buf);
	strftime_liquid(st, &buf, &p, f.str, f.len);
	return tv_str(buf.data, buf.len);
}
