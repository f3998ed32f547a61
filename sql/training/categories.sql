-- Categorical features (0.5.0): text, varchar, char and enum columns, and integer or
-- boolean columns with an "encode" rule, encoded as PostgresML's preprocess names them:
--   {"encode": "one_hot"}   one 0/1 feature per category seen in the training rows; "drop":
--                           "first" leaves out the first (dummy coding: the default for least
--                           squares, whose coefficients are otherwise not unique);
--   {"encode": "target"}    the label's mean per category (scikit-learn's TargetEncoder,
--                           fit then transform: "smooth" "auto" (default) or a number;
--                           a multiclass label gives one feature per class);
--   {"encode": "ordinal"} or {"encode": {"ordinal": [...]}}  the category's position
--                           (1, 2, ...) in the sorted categories or in the given list.
-- NULL is a category of its own when the training rows hold it (ordinal: always 0).
-- A category unseen at training is all zeros (one_hot: as the dropped first category), the training mean of the label
-- (target), NULL (ordinal, then its impute rule, if any). Categories sort as text in
-- the C collation (enums: in their own order; integers: as numbers).
--
-- An encoding is stored in the model's column layout as
--   {"method", "categories": [non-NULL categories in order], "values": [[..] per category]
--    (target, ordinal), "null": [..] or null, "unknown": [..], "drop": "first" (one_hot)}
-- and the same SQL (_category_feature_sql) encodes the training rows and every served row.

-- Types read as numbers: date and time types as seconds (date_part('epoch', ...): since
-- 1970-01-01 00:00 UTC for timestamptz, of the written wall-clock time for timestamp and
-- date, of the duration for interval, since midnight for time).
CREATE OR REPLACE FUNCTION ml_stack._is_temporal_type(typ regtype)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT typ IN ('date'::regtype, 'timestamp without time zone'::regtype, 'timestamp with time zone'::regtype,
                   'interval'::regtype, 'time without time zone'::regtype)
$$;

-- One output feature (q, from 1) of an encoded category, as SQL over the text expression
-- arg. Schema-qualified throughout: it is inlined into serving functions.
CREATE OR REPLACE FUNCTION ml_stack._category_feature_sql(encoding jsonb, arg text, q integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    k integer := jsonb_array_length(encoding -> 'categories');
    dropped integer := CASE WHEN encoding ->> 'drop' = 'first' THEN 1 ELSE 0 END;
    num text;
    arms text;
BEGIN
    IF encoding ->> 'method' = 'one_hot' THEN
        IF q > k - dropped THEN   -- the NULL category's feature
            RETURN format('(%s IS NULL)::pg_catalog.int4::pg_catalog.float8', arg);
        END IF;
        RETURN format('COALESCE(%s OPERATOR(pg_catalog.=) %L::pg_catalog.text, false)::pg_catalog.int4::pg_catalog.float8',
                      arg, encoding -> 'categories' ->> (q - 1 + dropped));
    END IF;
    -- the numbers go through float8 (the layout is a registry row: only numbers reach the SQL)
    SELECT string_agg(format(' WHEN %s OPERATOR(pg_catalog.=) %L::pg_catalog.text THEN (%s)::pg_catalog.float8', arg, c.value,
                             coalesce(((encoding -> 'values' -> (c.ordinality::integer - 1) ->> (q - 1))::float8)::text, 'NULL')),
                      '' ORDER BY c.ordinality)
    INTO arms FROM jsonb_array_elements_text(encoding -> 'categories') WITH ORDINALITY AS c;
    num := coalesce(((encoding -> 'unknown' ->> (q - 1))::float8)::text, 'NULL');
    RETURN format('(CASE WHEN %s IS NULL THEN (%s)::pg_catalog.float8%s ELSE (%s)::pg_catalog.float8 END)', arg,
                  coalesce(((encoding -> 'null' ->> (q - 1))::float8)::text, num), coalesce(arms, ''), num);
END
$$;

-- Whether serving should look a category up by a call rather than inline its SQL: an
-- inlined CASE of hundreds of arms per feature makes huge serving functions (planned per
-- query, and compiled by JIT: 136 s for 8k rows of a 1064-category, 6-class target encoding).
CREATE OR REPLACE FUNCTION ml_stack._category_is_large(encoding jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_array_length(encoding -> 'categories')
           * CASE WHEN encoding ->> 'method' = 'one_hot' THEN 1 ELSE jsonb_array_length(encoding -> 'unknown') END > 100
$$;

-- Every output feature of an encoded category, as an SQL float8[] over arg: its CASEs, or
-- for a large encoding a call that looks the category up.
CREATE OR REPLACE FUNCTION ml_stack._category_features_sql(encoding jsonb, arg text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN ml_stack._category_is_large(encoding)
                THEN format('ml_stack._category_features(%L::pg_catalog.jsonb, %s)', encoding, arg)
                ELSE (SELECT format('ARRAY[%s]', string_agg(ml_stack._category_feature_sql(encoding, arg, q), ', ' ORDER BY q))
                      FROM generate_series(1, jsonb_array_length(encoding -> 'unknown')) AS q) END
$$;

-- The same, computed for one value (predict_row).
CREATE OR REPLACE FUNCTION ml_stack._category_features(encoding jsonb, value text)
RETURNS float8[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i integer;
    w integer := jsonb_array_length(encoding -> 'unknown');
    features float8[];
BEGIN
    IF value IS NOT NULL THEN
        i := array_position(ARRAY(SELECT jsonb_array_elements_text(encoding -> 'categories')), value);
    END IF;
    IF encoding ->> 'method' = 'one_hot' THEN
        features := array_fill(0::float8, ARRAY[w]);
        i := i - CASE WHEN encoding ->> 'drop' IS NOT DISTINCT FROM 'first' THEN 1 ELSE 0 END;   -- 0: the dropped one
        IF value IS NULL AND jsonb_typeof(encoding -> 'null') = 'array' THEN
            features[w] := 1;
        ELSIF i > 0 THEN
            features[i] := 1;
        END IF;
        RETURN features;
    END IF;
    RETURN ARRAY(SELECT e::float8 FROM jsonb_array_elements_text(
        CASE WHEN value IS NULL AND jsonb_typeof(encoding -> 'null') = 'array' THEN encoding -> 'null'
             WHEN i IS NOT NULL THEN encoding -> 'values' -> (i - 1)
             ELSE encoding -> 'unknown' END) WITH ORDINALITY AS v(e, o) ORDER BY o);
END
$$;

-- Fit the encoding of category column g<gi> of pg_temp._ml_stack_rows on the training rows.
-- Its categories sort as text in the C collation, as numbers (integer columns), or in the
-- order of enum_labels (an enum). Returns
-- {"encoding", "names": [feature names], "rules": [{"impute", "scale"} per feature]}.
-- defaults: {"encode", "drop"} where the rule has none.
CREATE OR REPLACE FUNCTION ml_stack._fit_category_encoding(column_name text, gi integer, numeric_order boolean,
                                                           enum_labels text[], rule jsonb, defaults jsonb,
                                                           task text, classes float8[], class_labels text[],
                                                           train_filter text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
#variable_conflict use_column  -- the generated aliases (c, i, o) of the queries below
DECLARE
    encode jsonb := rule -> 'encode';
    method text;
    given text[];
    key text;
    cats text[];
    counts float8[];
    means float8[];
    variances float8[];
    shares float8[];   -- multiclass target: per category, the share of each class
    order_by text := CASE WHEN enum_labels IS NOT NULL THEN format('pg_catalog.array_position(%L::text[], v)', enum_labels)
                          WHEN numeric_order THEN 'v::numeric' ELSE 'v COLLATE "C"' END;
    null_count float8 := 0;
    null_at integer;
    nclass integer := CASE WHEN task = 'classification' AND cardinality(classes) > 2 THEN cardinality(classes) ELSE 1 END;
    w integer;
    total float8;
    mu float8[] := '{}';
    tau2 float8[] := '{}';
    smooth jsonb := coalesce(rule -> 'smooth', '"auto"');
    vals jsonb := '[]';
    row_vals jsonb;
    null_vals jsonb;
    names text[] := '{}';
    unknown text;
    i integer; c integer;
    n_i float8; m_i float8; v_i float8; lam float8;
    dropped integer;
    encoding jsonb;
    rules jsonb := '[]';
BEGIN
    -- the rule
    IF encode IS NULL THEN
        method := defaults ->> 'encode';
    ELSIF jsonb_typeof(encode) = 'string' AND encode #>> '{}' IN ('one_hot', 'target', 'ordinal') THEN
        method := encode #>> '{}';
    ELSIF jsonb_typeof(encode) = 'object' AND (SELECT array_agg(k) FROM jsonb_object_keys(encode) AS k) = ARRAY['ordinal']
          AND jsonb_typeof(encode -> 'ordinal') = 'array' AND jsonb_array_length(encode -> 'ordinal') > 0
          AND NOT EXISTS (SELECT FROM jsonb_array_elements(encode -> 'ordinal') AS e WHERE jsonb_typeof(e) NOT IN ('string', 'number')) THEN
        method := 'ordinal';
        given := ARRAY(SELECT e FROM jsonb_array_elements_text(encode -> 'ordinal') WITH ORDINALITY AS o(e, i) ORDER BY i);
        IF cardinality(given) <> (SELECT count(DISTINCT e) FROM unnest(given) AS e) THEN
            RAISE EXCEPTION 'the ordinal list of column "%" names a category twice', column_name
                USING ERRCODE = 'invalid_parameter_value', HINT = 'List every category once, in its order.';
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown encode rule % for column "%"', encode, column_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use "one_hot", "target", "ordinal", or {"ordinal": ["low", "medium", "high"]} (every category, in order).';
    END IF;
    FOR key IN SELECT jsonb_object_keys(rule) LOOP
        IF NOT (key = 'encode' OR (key = 'scale' AND method IN ('target', 'ordinal')) OR (key = 'impute' AND method = 'ordinal')
                OR (key = 'smooth' AND method = 'target') OR (key = 'drop' AND method = 'one_hot')) THEN
            RAISE EXCEPTION 'preprocess rule "%" does not apply to % column "%"', key, replace(method, '_', '-') || ' encoded', column_name
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE method
                          WHEN 'one_hot' THEN 'One-hot features are 0 or 1: they are not scaled, and an unseen category (or NULL, when the training rows had none) is all zeros.'
                          WHEN 'target' THEN 'A target-encoded column takes "scale" and "smooth" ("auto" or a number >= 0); an unseen category is the training mean.'
                          ELSE 'An ordinal column takes "scale", and "impute" for categories unseen at training (NULL is 0).' END;
        END IF;
    END LOOP;
    IF method = 'one_hot' AND rule ? 'drop' AND rule ->> 'drop' IS DISTINCT FROM 'first' AND rule ->> 'drop' IS DISTINCT FROM 'none' THEN
        RAISE EXCEPTION 'drop must be "first" or "none" for column "%", got %', column_name, rule -> 'drop'
            USING ERRCODE = 'invalid_parameter_value', HINT = '"first" leaves out the first category (dummy coding).';
    END IF;
    IF method = 'target' AND NOT (smooth = '"auto"' OR (jsonb_typeof(smooth) = 'number' AND (smooth #>> '{}')::float8 >= 0)) THEN
        RAISE EXCEPTION 'smooth must be "auto" or a number >= 0 for column "%", got %', column_name, smooth
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"encode": "target", "smooth": 10}; "auto" is scikit-learn''s empirical Bayes shrinkage.';
    END IF;

    -- the categories of the training rows, in order, with their label statistics
    EXECUTE format('SELECT array_agg(v ORDER BY %1$s NULLS LAST), array_agg(n ORDER BY %1$s NULLS LAST), '
                   'array_agg(m ORDER BY %1$s NULLS LAST), array_agg(s ORDER BY %1$s NULLS LAST), '
                   'array_agg(sh ORDER BY %1$s NULLS LAST) '
                   'FROM (SELECT g%2$s AS v, count(*)::float8 AS n, avg(y) AS m, var_pop(y) AS s, %4$s AS sh '
                   'FROM pg_temp._ml_stack_rows WHERE %3$s GROUP BY g%2$s) AS t', order_by, gi, train_filter,
                   CASE WHEN nclass > 1 AND method = 'target'
                        THEN format('ARRAY[%s]', (SELECT string_agg(format('avg((y = %s::float8)::integer::float8)', c), ', ' ORDER BY o)
                                                  FROM unnest(classes) WITH ORDINALITY AS u(c, o)))
                        ELSE 'ARRAY[0::float8]' END)
        INTO cats, counts, means, variances, shares;
    null_at := array_position(cats, NULL);
    IF null_at IS NOT NULL THEN
        null_count := counts[null_at];
        cats := cats[1 : null_at - 1];   -- NULLS LAST: the NULL category is the last
    END IF;

    IF method = 'ordinal' THEN
        IF given IS NOT NULL THEN
            SELECT array_agg(c ORDER BY c) INTO names FROM unnest(cats) AS c WHERE NOT c = ANY (given);
            IF cardinality(names) > 0 THEN
                RAISE EXCEPTION 'column "%" holds categories that its ordinal list leaves out: %', column_name,
                                (SELECT string_agg(quote_literal(c), ', ') FROM unnest(names[1:5]) AS c)
                                || CASE WHEN cardinality(names) > 5 THEN format(' and %s more', cardinality(names) - 5) ELSE '' END
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'The list must hold every category, in order.';
            END IF;
            cats := given;
        ELSIF enum_labels IS NOT NULL THEN
            cats := enum_labels;   -- an enum: its declared labels, in order, seen in training or not
        END IF;
        vals := (SELECT coalesce(jsonb_agg(jsonb_build_array(o) ORDER BY o), '[]') FROM generate_series(1, cardinality(cats)) AS o);
        encoding := jsonb_build_object('method', 'ordinal', 'categories', to_jsonb(cats), 'values', vals,
                                       'null', '[0]'::jsonb, 'unknown', '[null]'::jsonb);
        names := ARRAY[column_name];
        rules := jsonb_build_array(jsonb_strip_nulls(jsonb_build_object('impute', rule -> 'impute', 'scale', rule -> 'scale')));
    ELSIF method = 'one_hot' THEN
        dropped := CASE WHEN coalesce(rule ->> 'drop', defaults ->> 'drop') = 'first' AND cardinality(cats) > 0 THEN 1 ELSE 0 END;
        encoding := jsonb_build_object('method', 'one_hot', 'categories', coalesce(to_jsonb(cats), '[]'),
                                       'null', CASE WHEN null_at IS NOT NULL THEN '[1]'::jsonb END,
                                       'unknown', to_jsonb(array_fill(0, ARRAY[coalesce(cardinality(cats), 0) - dropped
                                                                              + CASE WHEN null_at IS NOT NULL THEN 1 ELSE 0 END])))
                    || CASE WHEN dropped = 1 THEN '{"drop": "first"}'::jsonb ELSE '{}' END;
        names := ARRAY(SELECT format('%s=%s', column_name, c) FROM unnest(cats) WITH ORDINALITY AS u(c, o) WHERE o > dropped ORDER BY o);
        IF null_at IS NOT NULL THEN
            names := names || format('%s IS NULL', column_name);
        END IF;
        rules := (SELECT jsonb_agg('{}'::jsonb) FROM unnest(names));
    ELSE
        -- target: per output (the label, or each class of a multiclass label), the shrunk mean
        -- of each category: lambda * category mean + (1 - lambda) * overall mean, lambda =
        -- n / (n + smooth); "auto": smooth = the category's label variance / the overall one
        total := (SELECT sum(x) FROM unnest(counts) AS x);
        FOR c IN 1 .. nclass LOOP
            IF nclass = 1 THEN
                mu := mu || (SELECT sum(counts[i] * means[i]) / total FROM generate_subscripts(counts, 1) AS i);
                tau2 := tau2 || (SELECT sum(counts[i] * (variances[i] + (means[i] - mu[1]) ^ 2)) / total
                                 FROM generate_subscripts(counts, 1) AS i);
            ELSE
                mu := mu || (SELECT sum(counts[i] * shares[i][c]) / total FROM generate_subscripts(counts, 1) AS i);
                tau2 := tau2 || (mu[c] * (1 - mu[c]));
            END IF;
        END LOOP;
        FOR i IN 1 .. cardinality(counts) LOOP
            row_vals := '[]';
            FOR c IN 1 .. nclass LOOP
                n_i := counts[i];
                m_i := CASE WHEN nclass = 1 THEN means[i] ELSE shares[i][c] END;
                v_i := CASE WHEN nclass = 1 THEN variances[i] ELSE m_i * (1 - m_i) END;
                lam := CASE WHEN smooth = '"auto"' THEN CASE WHEN tau2[c] > 0 AND v_i > 0 THEN n_i / (n_i + v_i / tau2[c]) ELSE 1 END
                            ELSE n_i / (n_i + (smooth #>> '{}')::float8) END;
                row_vals := row_vals || to_jsonb(lam * m_i + (1 - lam) * mu[c]);
            END LOOP;
            IF i = null_at THEN
                null_vals := row_vals;
            ELSE
                vals := vals || jsonb_build_array(row_vals);
            END IF;
        END LOOP;
        encoding := jsonb_build_object('method', 'target', 'categories', coalesce(to_jsonb(cats), '[]'), 'values', vals,
                                       'null', null_vals, 'unknown', to_jsonb(mu));
        names := CASE WHEN nclass = 1 THEN ARRAY[column_name]
                      ELSE ARRAY(SELECT format('%s[%s]', column_name, coalesce(class_labels[o], classes[o]::text))
                                 FROM generate_series(1, nclass) AS o ORDER BY o) END;
        rules := (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object('scale', rule -> 'scale'))) FROM unnest(names));
    END IF;
    RETURN jsonb_build_object('encoding', encoding, 'names', to_jsonb(names), 'rules', rules);
END
$$;

-- The columns of a read (expressions over from_sql) that look like free text rather than
-- categories: more than 1000 distinct values, or more than 50 and more than half the rows.
-- Returns their descriptions for the error that lists every unusable column.
CREATE OR REPLACE FUNCTION ml_stack._free_text_columns(from_sql text, exprs text[], names text[], types text[])
RETURNS text[]
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    counts bigint[];
    n bigint;
BEGIN
    IF cardinality(exprs) = 0 THEN
        RETURN '{}';
    END IF;
    EXECUTE format('SELECT count(*), ARRAY[%s] FROM %s',
                   (SELECT string_agg(format('count(DISTINCT %s)', e), ', ') FROM unnest(exprs) AS e), from_sql)
        INTO n, counts;
    RETURN ARRAY(SELECT format('"%s" (%s with %s distinct values in %s rows: free text?)', names[i], types[i], counts[i], n)
                 FROM generate_subscripts(exprs, 1) AS i
                 WHERE counts[i] > 1000 OR (counts[i] > 50 AND counts[i] * 2 > n)
                 ORDER BY i);
END
$$;

-- The encoding of the training rows by a join (a CASE of k arms per row and feature would cost
-- k comparisons; the join looks each row's category up once): the LEFT JOIN clause of category
-- column g<gi> of the rows t, and output feature q over it. NULL reads the NULL category.
CREATE OR REPLACE FUNCTION ml_stack._category_join_sql(encoding jsonb, gi integer)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
    SELECT CASE WHEN jsonb_array_length(encoding -> 'categories') = 0 THEN ''
                ELSE format(' LEFT JOIN (VALUES %s) AS e%s(c, i, v) ON e%s.c = t.g%s',
                            (SELECT string_agg(format('(%L::text, %s, %L::float8[])', c.value, c.ordinality,
                                                      ARRAY(SELECT x::float8 FROM jsonb_array_elements_text(
                                                                coalesce(encoding -> 'values' -> (c.ordinality::integer - 1), '[]'))
                                                                WITH ORDINALITY AS u(x, o) ORDER BY o)::text),
                                               ', ' ORDER BY c.ordinality)
                             FROM jsonb_array_elements_text(encoding -> 'categories') WITH ORDINALITY AS c),
                            gi, gi, gi) END
$$;

CREATE OR REPLACE FUNCTION ml_stack._category_joined_feature_sql(encoding jsonb, gi integer, q integer)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET extra_float_digits = 3
AS $$
DECLARE
    k integer := jsonb_array_length(encoding -> 'categories');
    dropped integer := CASE WHEN encoding ->> 'drop' = 'first' THEN 1 ELSE 0 END;
BEGIN
    IF encoding ->> 'method' = 'one_hot' THEN
        IF q > k - dropped THEN
            RETURN format('(t.g%s IS NULL)::integer::float8', gi);
        END IF;
        RETURN format('coalesce(e%s.i = %s, false)::integer::float8', gi, q + dropped);
    END IF;
    RETURN format('CASE WHEN t.g%1$s IS NULL THEN %2$s::float8 ELSE %3$s END', gi,
                  coalesce(((encoding -> 'null' ->> (q - 1))::float8)::text, ((encoding -> 'unknown' ->> (q - 1))::float8)::text, 'NULL'),
                  CASE WHEN k = 0 THEN coalesce(((encoding -> 'unknown' ->> (q - 1))::float8)::text || '::float8', 'NULL::float8')
                       ELSE format('coalesce(e%s.v[%s], %s::float8)', gi, q,
                                   coalesce(((encoding -> 'unknown' ->> (q - 1))::float8)::text, 'NULL')) END);
END
$$;
