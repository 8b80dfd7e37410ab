-- import: CSV into the staging table with COPY, then one set-based validate-and-upsert.
\set VERBOSITY terse

COPY novu.subscriber_import ("subscriberId", "firstName", "lastName", email, phone, locale, avatar)
FROM STDIN (FORMAT csv, HEADER match);
subscriberId,firstName,lastName,email,phone,locale,avatar
csv-1,Grace,Hopper,grace@example.com,+15550001,en-US,https://example.com/g.png
csv-2,Alan,Turing,alan@example.co.uk,,en,
,No,Identifier,noid@example.com,,,
csv-3,Bad,Email,bad-email,,,
csv-4,Bad,Locale,,,english,
csv-5,First,Version,first@example.com,,,
csv-5,Second,Version,second@example.com,,,
  csv-6  ,  Spaces  ,,,,,
user-1,,,ada.new@example.com,,,
\.

-- data column (JSON object text) is optional
COPY novu.subscriber_import ("subscriberId", data) FROM STDIN (FORMAT csv);
csv-7,"{""plan"": ""pro""}"
csv-8,"{""plan"": "
csv-9,"[1, 2]"
csv-10,"{""a"": 1e30000, ""b"": 1e30000, ""c"": 1e30000}"
\.

SELECT novu.import_subscribers();

SELECT subscriber_id, first_name, last_name, email, phone, locale, avatar, data
  FROM novu.subscribers WHERE subscriber_id LIKE 'csv-%' ORDER BY 1;
-- an existing subscriber: only the non-empty CSV fields change
SELECT first_name, email FROM novu.subscribers WHERE subscriber_id = 'user-1';
SELECT line, subscriber_id, reason, row_data FROM novu.subscriber_import_rejects ORDER BY line;
-- the staging table is emptied
SELECT count(*) FROM novu.subscriber_import;
-- an empty import
SELECT novu.import_subscribers();

-- the header is checked (HEADER match): a wrong column name stops the COPY
COPY novu.subscriber_import ("subscriberId", email) FROM STDIN (FORMAT csv, HEADER match);
id,email
x,x@example.com
\.
SELECT count(*) FROM novu.subscriber_import;
-- staged rows repeating a line number (novu_app may write line): the last row
-- of a subscriberId still wins alone, and the import goes through
TRUNCATE novu.subscriber_import, novu.subscriber_import_rejects;
INSERT INTO novu.subscriber_import ("subscriberId", email, line)
VALUES ('dup-line', 'first@example.com', 7), ('dup-line', 'second@example.com', 7), ('dup-other', NULL, 8);
SELECT novu.import_subscribers() - 'durationMs' AS imported;
SELECT subscriber_id, reason FROM novu.subscriber_import_rejects ORDER BY line, subscriber_id;
SELECT subscriber_id, email FROM novu.subscribers WHERE subscriber_id LIKE 'dup-%' ORDER BY 1;
SELECT count(*) AS staged_left FROM novu.subscriber_import;
