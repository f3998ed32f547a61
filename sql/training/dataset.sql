-- Read the training relation once into a temporary table, check it, split it and
-- describe it. Everything after this works on that one consistent read.
--
-- pg_temp._ml_stack_rows(r, y, k, x1 .. xp, g1 .. gc, t1 .. tq): r is the row's
-- position in the relation's own order, k a seeded hash of r that orders the random
-- split; x are the numeric features (booleans 0/1, dates and times as seconds, an
-- array column of fixed length L gives L of them, its elements in order), g the
-- categorical columns as text (encoded by SQL expressions fitted on the training rows:
-- training/categories.sql), t the text columns that a "vectorize" rule turns into a
-- block of features (a "block": sparse, never stored dense). A text label of a
-- classification is y = its position among the sorted labels, from 0.
-- The features a model takes, in table order, are x and the blocks' dimensions
-- interleaved as their columns are; "columns" describes that layout, which
-- predict_row() follows to build the feature array from a row.
-- Returns a jsonb description (the "dataset") that engines and metrics use:
--   n, skipped, train_rows, test_rows, test_size, test_sampling, seed,
--   train_filter / test_filter  (SQL predicates over the temporary table),
--   features [{name, type, count, nulls, mean, std, min, max}]  (train rows),
--   label {name, type, mean, std, min, max}, classes [..] (classification),
--   label.class_labels (classification: each class as text, as the label column holds it),
--   x [SQL expression of each preprocessed feature], x_mean, x_std (train rows),
--   transform [{impute, shift, scale}]  (what preprocessing does to raw feature j),
--   blocks [{column, t, spec, dims, offset}], columns [{name, type, kind, width, offset, ..}],
--   x_positions [position of x_j among the model's features], num_features.
-- The splits train() knows (PostgresML's names): 'first' / 'last' take the test rows from the start / end of
-- the relation in its own order, 'random' by a seeded hash, 'stratified' by class.
CREATE OR REPLACE FUNCTION ml_stack._check_test_sampling(test_sampling text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF test_sampling IS NULL OR test_sampling NOT IN ('random', 'first', 'last', 'stratified') THEN
        RAISE EXCEPTION 'unknown test_sampling "%"', test_sampling
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''random'', ''first'', ''last'' or ''stratified''.';
    END IF;
END
$$;

-- The error for the feature columns a model cannot use (each described as '"name" (why)'),
-- all of them in one message.
CREATE OR REPLACE FUNCTION ml_stack._unusable_columns(descriptions text[])
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    names text[] := ARRAY(SELECT substring(d FROM '^"(.*)" \(') FROM unnest(descriptions) AS d);
    free_text text := (SELECT substring(d FROM '^"(.*)" \(') FROM unnest(descriptions) AS d WHERE d LIKE '%free text?)' LIMIT 1);
BEGIN
    RAISE EXCEPTION '%', CASE WHEN cardinality(descriptions) = 1 THEN format('feature column %s cannot be used', descriptions[1])
                              ELSE format('feature columns the model cannot use: %s', array_to_string(descriptions, ', ')) END
        USING ERRCODE = 'datatype_mismatch',
              HINT = format('Leave them out with exclude => ARRAY[%s]%s; or cast or encode them in a view.',
                            (SELECT string_agg(quote_literal(n), ', ') FROM unnest(names) AS n),
                            CASE WHEN free_text IS NOT NULL
                                 THEN format('; vectorize free text with preprocess => ''{"%s": {"vectorize": "hashing"}}'' (or "tfidf", "counts"), '
                                             'or encode it by the label''s mean with {"encode": "target"}', free_text) ELSE '' END);
END
$$;

-- exclude: columns left out; category_defaults: {"encode", "drop"} of categorical columns whose rule has none.
CREATE OR REPLACE FUNCTION ml_stack._prepare_dataset(
    rel regclass, y_column_name text, task text, test_size real, test_sampling text,
    seed bigint, preprocess jsonb, project_name text, exclude text[], category_defaults jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET jit = off   -- wide aggregate queries: LLVM compile time dominates (DESIGN §5)
SET extra_float_digits = 3  -- numbers written into SQL text must round-trip exactly
AS $$
DECLARE
    numeric_types CONSTANT regtype[] := ARRAY['smallint', 'integer', 'bigint', 'real', 'double precision',
                                              'numeric', 'boolean']::regtype[];
    y_att   record;
    cols    record;
    names   text[] := '{}';
    types   text[] := '{}';
    p       integer;
    n       bigint;
    total   bigint;
    counts  float8[];
    stats   float8[];
    classes float8[];
    ntest   bigint;
    ts      numeric := round(test_size::numeric, 6);
    test_filter text;
    features jsonb := '[]';
    transform jsonb := '[]';
    x_expr  text[] := '{}';
    x_mean  float8[] := '{}';
    x_std   float8[] := '{}';
    rule    jsonb;
    impute  text; scale text;
    iv float8; shift float8; spread float8;
    m float8; sd float8; mn float8; mx float8; nn float8; nnull float8; mm float8;
    missing text[] := '{}';
    sql     text;
    j integer;
    started timestamptz := clock_timestamp();
    class_counts jsonb;
    key text;
    colnames text[] := '{}';    -- every feature column
    src     text[] := '{}';     -- the column of each x
    layout  jsonb := '[]';      -- per feature column: {name, type, kind, ci, ...}
    raw_cols text[] := '{}';
    unusable text[] := '{}';
    ci integer := 0;
    col jsonb;
    width bigint; width_max bigint; shapes bigint; shape text; nonnull bigint;
    bounds integer[]; lo integer[]; strides integer[];
    x_sel text[] := '{}';
    t_sel text[] := '{}';
    blocks jsonb := '[]';
    spec jsonb;
    vid bigint;
    pos integer := 0;
    x_positions integer[] := '{}';
    columns jsonb := '[]';
    b integer;
    text_label boolean := false;
    class_labels text[];
    label_order text;
    g_sel  text[] := '{}';      -- the category columns' reads
    auto_g text[] := '{}';      -- category columns without an encode rule: checked for free text
    auto_names text[] := '{}';
    auto_gi integer[] := '{}';
    auto_types text[] := '{}';
    free_text text[];
    fitted jsonb;
    p_num  integer;             -- the numeric x columns (the raw features before the categories')
    raw    text[] := '{}';      -- each feature before preprocessing, as SQL over the rows (final order)
    rules  jsonb := '[]';       -- each feature's preprocess rule
    f_names text[] := '{}'; f_types text[] := '{}';
    xi integer; gi integer := 0;
    joins  text := '';          -- the lookups of the encoded categories (training/categories.sql)
    unseen jsonb := '[]';       -- ordinal features without impute: {x, name}
BEGIN
    -- label column: must exist and be numeric
    SELECT a.attname, a.atttypid::regtype AS typ, t.typtype = 'e' AS is_enum, ml_stack._is_text_type(a.atttypid) AS is_text
    INTO y_att
    FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
    WHERE a.attrelid = rel AND a.attname = y_column_name AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" does not exist in relation %', y_column_name, rel
            USING ERRCODE = 'undefined_column',
                  HINT = format('The columns are: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                      FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
    END IF;
    IF (y_att.is_text OR y_att.is_enum) AND task = 'classification' THEN
        text_label := true;   -- classes by name: y is the class's position among the sorted labels
    ELSIF NOT y_att.typ = ANY (numeric_types) THEN
        RAISE EXCEPTION 'label column "%" has type %, which is not %', y_column_name, y_att.typ,
                        CASE WHEN task = 'classification' THEN 'numeric, boolean, text or an enum' ELSE 'numeric' END
            USING ERRCODE = 'datatype_mismatch',
                  HINT = CASE WHEN y_att.is_text OR y_att.is_enum
                              THEN 'A regression needs a numeric label; for classes by name use task => ''classification''.'
                              ELSE 'Cast the label to a number or to text in a view, and train on the view.' END;
    END IF;
    IF exclude IS NOT NULL THEN
        SELECT array_agg(e ORDER BY o) INTO missing FROM unnest(exclude) WITH ORDINALITY AS u(e, o)
        WHERE e IS NULL OR e = y_column_name
           OR NOT EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                          WHERE a.attrelid = rel AND a.attname = e AND a.attnum > 0 AND NOT a.attisdropped);
        IF cardinality(missing) > 0 THEN
            RAISE EXCEPTION 'exclude names %, which is not a feature column of %',
                            CASE WHEN missing[1] IS NULL THEN 'NULL' ELSE format('"%s"', missing[1]) END, rel
                USING ERRCODE = 'undefined_column',
                      HINT = CASE WHEN missing[1] = y_column_name THEN 'The label is never a feature: leave it out of exclude.'
                                  ELSE format('The columns are: %s.', (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
                                      FROM pg_catalog.pg_attribute AS a WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)) END;
        END IF;
        missing := '{}';
    END IF;

    IF preprocess IS NULL OR jsonb_typeof(preprocess) <> 'object' THEN
        RAISE EXCEPTION 'preprocess must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'e.g. preprocess => ''{"age": {"impute": "mean", "scale": "standard"}}''';
    END IF;

    -- features: every other column (but those excluded), in table order: numbers (booleans
    -- as 0/1, dates and times as seconds), arrays of numbers (of one length), text with a
    -- vectorize rule, categories (text and enums; integers and booleans with an encode rule);
    -- all the others in one error
    FOR cols IN
        SELECT a.attname, a.atttypid::regtype AS typ, t.typelem::regtype AS elem,
               t.typcategory = 'A' AND t.typelem <> 0 AS is_array, ml_stack._is_text_type(a.atttypid) AS is_text,
               t.typtype = 'e' AS is_enum,
               CASE WHEN t.typtype = 'e' THEN ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum AS e
                                                    WHERE e.enumtypid = a.atttypid ORDER BY e.enumsortorder) END AS enum_labels
        FROM pg_catalog.pg_attribute AS a JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped AND a.attname <> y_column_name
          AND NOT a.attname = ANY (coalesce(exclude, '{}'))
        ORDER BY a.attnum
    LOOP
        ci := ci + 1;
        colnames := colnames || cols.attname::text;
        rule := preprocess -> cols.attname::text;
        IF (cols.is_text OR cols.is_enum) AND NOT coalesce(rule ? 'vectorize', false)
           OR (rule ? 'encode' AND cols.typ IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype, 'boolean'::regtype)) THEN
            gi := gi + 1;
            layout := layout || jsonb_build_object('name', cols.attname, 'type', cols.typ::text, 'kind', 'category', 'ci', ci,
                                                   'enum_labels', to_jsonb(cols.enum_labels),
                                                   'numeric_order', cols.typ <> 'boolean'::regtype AND NOT (cols.is_text OR cols.is_enum));
            raw_cols := raw_cols || format('%I::text AS c%s', cols.attname, ci);
            IF NOT coalesce(rule ? 'encode', false) THEN
                auto_g := auto_g || format('%I::text', cols.attname);
                auto_gi := auto_gi || gi;
                auto_names := auto_names || cols.attname::text;
                auto_types := auto_types || cols.typ::text;
            END IF;
        ELSIF rule ? 'encode' AND NOT cols.is_text THEN
            unusable := unusable || format('"%s" (%s: "encode" takes text, enum, integer and boolean columns)', cols.attname, cols.typ);
        ELSIF cols.typ = ANY (numeric_types) OR ml_stack._is_temporal_type(cols.typ) THEN
            layout := layout || jsonb_build_object('name', cols.attname, 'type', cols.typ::text, 'kind',
                                                   CASE WHEN cols.typ = 'boolean'::regtype THEN 'boolean'
                                                        WHEN ml_stack._is_temporal_type(cols.typ) THEN 'temporal' ELSE 'number' END, 'ci', ci);
            raw_cols := raw_cols || format('%s AS c%s', CASE WHEN cols.typ = 'boolean'::regtype THEN format('%I::integer::float8', cols.attname)
                                                             WHEN ml_stack._is_temporal_type(cols.typ) THEN format('date_part(''epoch'', %I)', cols.attname)
                                                             ELSE format('%I::float8', cols.attname) END, ci);
        ELSIF cols.is_array AND cols.elem = ANY (numeric_types) AND cols.elem <> 'boolean'::regtype THEN
            layout := layout || jsonb_build_object('name', cols.attname, 'type', cols.typ::text, 'kind', 'array', 'ci', ci);
            raw_cols := raw_cols || format('%I::float8[] AS c%s', cols.attname, ci);
        ELSIF cols.is_text AND rule ? 'vectorize' THEN
            layout := layout || jsonb_build_object('name', cols.attname, 'type', cols.typ::text, 'kind', 'text', 'ci', ci);
            raw_cols := raw_cols || format('%I::text AS c%s', cols.attname, ci);
        ELSE
            unusable := unusable || format('"%s" (%s)', cols.attname, cols.typ);
        END IF;
    END LOOP;
    IF cardinality(unusable) > 0 THEN
        -- one error for every column: free text among the categories too (one scan of the relation)
        unusable := unusable || ml_stack._free_text_columns(rel::text, auto_g, auto_names, auto_types);
        PERFORM ml_stack._unusable_columns(unusable);
    END IF;
    -- the rules of numeric and categorical columns, checked before the read (a misspelled impute
    -- must not read as none, nor fail after minutes of reading)
    FOR col IN SELECT value FROM jsonb_array_elements(layout) WHERE value ->> 'kind' <> 'text' LOOP
        rule := preprocess -> (col ->> 'name');
        IF rule IS NOT NULL AND jsonb_typeof(rule) <> 'object' THEN
            RAISE EXCEPTION 'preprocess rule for "%" must be an object, got %', col ->> 'name', rule
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"impute": "mean", "scale": "standard"}';
        END IF;
        SELECT k INTO key FROM jsonb_object_keys(coalesce(rule, '{}')) AS k
        WHERE NOT k = ANY (CASE WHEN col ->> 'kind' = 'category' THEN ARRAY['encode', 'scale', 'impute', 'smooth', 'drop']
                                ELSE ARRAY['impute', 'scale'] END) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'unknown preprocess rule "%" for column "%"', key, col ->> 'name'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN col ->> 'kind' = 'category'
                                  THEN 'A categorical column takes "encode" ("one_hot", "target", "ordinal"), with "drop" (one_hot), '
                                       '"smooth" (target), "scale" (target, ordinal), "impute" (ordinal); text takes "vectorize" instead.'
                                  ELSE format('A %s column takes "impute" and "scale"%s.', col ->> 'type',
                                              CASE WHEN col ->> 'type' IN ('smallint', 'integer', 'bigint', 'boolean')
                                                   THEN ', or "encode" to be a category' ELSE '' END) END;
        END IF;
    END LOOP;
    IF ci = 0 THEN
        RAISE EXCEPTION 'relation % has no feature columns besides the label "%"', rel, y_column_name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A model needs at least one numeric feature column.';
    END IF;
    FOR key IN SELECT jsonb_object_keys(preprocess) LOOP
        IF NOT key = ANY (colnames) THEN
            RAISE EXCEPTION 'preprocess names column "%", which is not a feature of %', key, rel
                USING ERRCODE = 'undefined_column',
                      HINT = format('The features are: %s.', array_to_string(colnames, ', '));
        END IF;
    END LOOP;

    -- the one read of the relation. k is in the C collation: hex digits sort alike in every
    -- collation, and C compares bytes (the split's sort of 200k keys took 0.26 s under en_US)
    IF to_regclass('pg_temp._ml_stack_rows') IS NOT NULL THEN
        DROP TABLE pg_temp._ml_stack_rows;  -- an earlier train in this transaction
    END IF;
    -- the read, into c1 .. cm (one per feature column); then the numeric features x in
    -- table order (arrays: one x per element, so their length must be known first)
    -- the random split hashes the primary key when the relation has one: a row keeps its side
    -- of the split however the table changes (an UPDATE moves rows, and so their positions)
    SELECT string_agg(format('%I', a.attname), ', ' ORDER BY k.o) INTO key
    FROM pg_catalog.pg_index AS i, unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, o)
         JOIN pg_catalog.pg_attribute AS a ON a.attrelid = rel AND a.attnum = k.attnum
    WHERE i.indrelid = rel AND i.indisprimary;
    EXECUTE format('CREATE TEMPORARY TABLE _ml_stack_raw ON COMMIT DROP AS '
                   'SELECT row_number() OVER () AS r, %s AS split_key, %s AS y%s FROM %s',
                   CASE WHEN key IS NULL THEN 'NULL::text' WHEN key LIKE '%,%' THEN format('ROW(%s)::text', key)
                        ELSE format('%s::text', key) END,
                   CASE WHEN text_label THEN format('%I', y_column_name)
                        WHEN y_att.typ = 'boolean'::regtype THEN format('%I::integer::float8', y_column_name)
                        ELSE format('%I::float8', y_column_name) END,
                   (SELECT string_agg(', ' || e, '') FROM unnest(raw_cols) AS e), rel);
    GET DIAGNOSTICS total = ROW_COUNT;
    IF text_label THEN
        -- the classes by name, sorted as text in the C collation (an enum: in its own order);
        -- y becomes the position among them, from 0
        EXECUTE format('SELECT array_agg(v::text ORDER BY v%s) FROM (SELECT DISTINCT y AS v FROM pg_temp._ml_stack_raw '
                       'WHERE y IS NOT NULL) AS d', CASE WHEN y_att.is_enum THEN '' ELSE ' COLLATE "C"' END)
            INTO class_labels;
        label_order := format('(pg_catalog.array_position(%L::text[], y::text) - 1)::float8', class_labels);
    END IF;
    b := 0;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        ci := (col ->> 'ci')::integer;
        CASE col ->> 'kind'
        WHEN 'array' THEN
            -- one shape in every row; an array of several dimensions (an image) gives its elements in
            -- row-major order, as unnest() reads them
            EXECUTE format('SELECT min(cardinality(c%1$s)), max(cardinality(c%1$s)), count(DISTINCT array_dims(c%1$s)), '
                           'min(array_dims(c%1$s)), count(c%1$s) FROM pg_temp._ml_stack_raw', ci)
                INTO width, width_max, shapes, shape, nonnull;
            IF nonnull = 0 THEN
                RAISE EXCEPTION 'array column "%" is NULL in every row', col ->> 'name'
                    USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave the column out in a view.';
            ELSIF width <> width_max OR shapes > 1 OR width = 0 THEN
                RAISE EXCEPTION 'array column "%" holds arrays of varying length (% to % elements%)', col ->> 'name',
                                width, width_max, CASE WHEN width = width_max THEN ', of different shapes' ELSE '' END
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Array features need one length in every row (e.g. an embedding); pad or cut them in a view.';
            END IF;
            -- '[1:8][0:7]' -> lower bounds {1,0}, lengths {8,8}
            lo := ARRAY(SELECT bd[1]::integer FROM regexp_matches(shape, '\[(-?\d+):(-?\d+)\]', 'g') AS bd);
            bounds := ARRAY(SELECT bd[2]::integer - bd[1]::integer + 1 FROM regexp_matches(shape, '\[(-?\d+):(-?\d+)\]', 'g') AS bd);
            strides := array_fill(1, ARRAY[cardinality(bounds)]);
            FOR d IN REVERSE cardinality(bounds) - 1 .. 1 LOOP
                strides[d] := strides[d + 1] * bounds[d + 1];
            END LOOP;
            FOR j IN 1 .. width LOOP
                names := names || format('%s[%s]', col ->> 'name', j);
                types := types || (col ->> 'type');
                src := src || (col ->> 'name');
                x_sel := x_sel || format('c%s%s AS x%s', ci,
                                         (SELECT string_agg(format('[%s]', lo[d] + ((j - 1) / strides[d]) % bounds[d]), '' ORDER BY d)
                                          FROM generate_subscripts(bounds, 1) AS d),
                                         cardinality(names));
            END LOOP;
            layout := jsonb_set(layout, ARRAY[b::text], col || jsonb_build_object('width', width));
        WHEN 'text' THEN
            t_sel := t_sel || format('c%s AS t%s', ci, cardinality(t_sel) + 1);
        WHEN 'category' THEN
            g_sel := g_sel || format('c%s AS g%s', ci, cardinality(g_sel) + 1);
        ELSE
            names := names || (col ->> 'name');
            types := types || (col ->> 'type');
            src := src || (col ->> 'name');
            x_sel := x_sel || format('c%s AS x%s', ci, cardinality(names));
        END CASE;
        b := b + 1;
    END LOOP;
    p_num := cardinality(names);
    EXECUTE format('CREATE TEMPORARY TABLE _ml_stack_rows ON COMMIT DROP AS '
                   'SELECT r, %s AS y, md5(%L || '':'' || coalesce(split_key, r::text)) COLLATE "C" AS k%s FROM pg_temp._ml_stack_raw',
                   coalesce(label_order, 'y'), seed, (SELECT string_agg(', ' || e, '') FROM unnest(x_sel || g_sel || t_sel) AS e));
    DROP TABLE pg_temp._ml_stack_raw;
    DELETE FROM pg_temp._ml_stack_rows WHERE y IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    n := total - n;
    -- categories without an encode rule that look like free text: refused, with what to do
    free_text := ml_stack._free_text_columns('pg_temp._ml_stack_rows', ARRAY(SELECT format('g%s', i) FROM unnest(auto_gi) AS i),
        auto_names, auto_types);
    IF cardinality(free_text) > 0 THEN
        PERFORM ml_stack._unusable_columns(free_text);
    END IF;
    RAISE NOTICE 'ml_stack: read % rows from % in % s', total, rel,
        round(extract(epoch FROM clock_timestamp() - started)::numeric, 3);
    IF total > n THEN
        RAISE NOTICE 'ml_stack: % rows with a NULL label "%" are left out', total - n, y_column_name;
    END IF;
    IF n = 0 THEN
        RAISE EXCEPTION 'relation % has no rows with a label to train on', rel
            USING ERRCODE = 'no_data_found',
                  HINT = CASE WHEN total > 0 THEN format('All %s rows have a NULL "%s".', total, y_column_name)
                              ELSE 'Load data into the relation first.' END;
    END IF;

    -- NULL features need an impute rule
    IF p_num > 0 THEN
        EXECUTE format('SELECT ARRAY[%s] FROM pg_temp._ml_stack_rows',
                       (SELECT string_agg(format('count(x%s)::float8', i), ', ') FROM generate_series(1, p_num) AS i))
            INTO counts;
    END IF;
    FOR j IN 1 .. p_num LOOP
        IF counts[j] < n AND (preprocess -> src[j] ->> 'impute') IS NULL THEN
            missing := missing || format('%s (%s NULLs)', names[j], n - counts[j]::bigint);
        END IF;
    END LOOP;
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'feature columns have NULL values and no impute rule: %', array_to_string(missing, ', ')
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = format('Add an impute rule, e.g. preprocess => ''{"%s": {"impute": "mean"}}'', or filter the rows in a view.',
                                split_part(split_part(missing[1], ' ', 1), '[', 1));
    END IF;

    -- classes
    IF task = 'classification' THEN
        SELECT array_agg(y ORDER BY y), jsonb_object_agg(y::text, c)
        INTO classes, class_counts
        FROM (SELECT y, count(*) AS c FROM pg_temp._ml_stack_rows GROUP BY y) AS g;
        IF cardinality(classes) < 2 THEN
            RAISE EXCEPTION 'label "%" has a single class (%): classification needs at least two', y_column_name,
                            coalesce(class_labels[1], classes[1]::text)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Check the data or the label column; for a continuous target use task => ''regression''.';
        END IF;
        IF NOT text_label AND cardinality(classes) > 10 AND (EXISTS (SELECT FROM unnest(classes) AS c WHERE c <> trunc(c))
                                                             OR (cardinality(classes) > 100 AND cardinality(classes) * 20 > n)) THEN
            RAISE EXCEPTION 'label "%" has % distinct values (e.g. %) in % rows: is this a regression?', y_column_name,
                            cardinality(classes), coalesce((SELECT c FROM unnest(classes) AS c WHERE c <> trunc(c) LIMIT 1), classes[cardinality(classes)]), n
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'For a continuous target use task => ''regression''; for classes, label them with whole numbers or names.';
        END IF;
        class_labels := coalesce(class_labels, ARRAY(SELECT CASE WHEN y_att.typ = 'boolean'::regtype THEN (c = 1)::text ELSE c::text END
                                                     FROM unnest(classes) AS c));
    END IF;

    -- split
    IF test_size IS NULL OR test_size <= 0 OR test_size = 'Infinity'::real OR test_size = 'NaN'::real THEN
        RAISE EXCEPTION 'test_size must be a fraction in (0, 1) or a row count >= 1, got %', test_size
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 0.25.';
    END IF;
    IF test_size < 1 AND (ts <= 0 OR ts >= 1) THEN
        RAISE EXCEPTION 'test_size % rounds to % at 6 decimals: not a usable fraction', test_size, ts
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a fraction between 0.000001 and 0.999999, or a row count.';
    ELSIF ts < 1 THEN
        ntest := ceil(n * ts);
    ELSIF ts = trunc(ts) THEN
        ntest := ts;
    ELSE
        RAISE EXCEPTION 'test_size % is neither a fraction below 1 nor a whole row count', test_size
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Use e.g. 0.25 or 100.';
    END IF;
    IF ntest >= n THEN
        RAISE EXCEPTION 'test_size % leaves no training rows: % of % rows would be test rows', test_size, ntest, n
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use a smaller test_size (a fraction like 0.25, or fewer rows than the relation has).';
    END IF;
    CASE test_sampling   -- its name was checked by train and run_training (_check_test_sampling)
        WHEN 'first' THEN
            EXECUTE 'SELECT r FROM pg_temp._ml_stack_rows ORDER BY r OFFSET $1 LIMIT 1' INTO m USING ntest - 1;
            test_filter := format('r <= %s', m::bigint);
        WHEN 'last' THEN
            -- r numbers every row read; rows with a NULL label are gone, so count from the end
            EXECUTE 'SELECT r FROM pg_temp._ml_stack_rows ORDER BY r DESC OFFSET $1 LIMIT 1' INTO m USING ntest - 1;
            test_filter := format('r >= %s', m::bigint);
        WHEN 'random' THEN
            EXECUTE 'SELECT k FROM pg_temp._ml_stack_rows ORDER BY k OFFSET $1 LIMIT 1' INTO key USING ntest - 1;
            test_filter := format('k <= %L', key);
        WHEN 'stratified' THEN
            IF task <> 'classification' THEN
                RAISE EXCEPTION 'test_sampling ''stratified'' needs a classification task'
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''random'' or ''last'' for regression.';
            END IF;
            -- each class gets its share of the test rows (largest remainder), then its lowest keys
            WITH shares AS (
                SELECT c.key::float8 AS y, c.value::bigint AS cnt,
                       ntest * c.value::numeric / n AS exact
                FROM jsonb_each_text(class_counts) AS c
            ), alloc AS (
                SELECT y, cnt, floor(exact)::bigint
                       + CASE WHEN row_number() OVER (ORDER BY exact - floor(exact) DESC, y)
                                   <= ntest - sum(floor(exact)) OVER () THEN 1 ELSE 0 END AS t
                FROM shares
            ), thresholds AS (
                SELECT a.y, a.t, (SELECT s.k FROM pg_temp._ml_stack_rows AS s WHERE s.y = a.y
                                  ORDER BY s.k OFFSET a.t - 1 LIMIT 1) AS k
                FROM alloc AS a WHERE a.t > 0
            )
            SELECT coalesce(format('CASE y %s ELSE false END',
                                   string_agg(format('WHEN %s THEN k <= %L', y, k), ' ' ORDER BY y)), 'false')
            INTO test_filter FROM thresholds;
    END CASE;

    IF task = 'classification' THEN
        EXECUTE format('SELECT count(DISTINCT y) FROM pg_temp._ml_stack_rows WHERE NOT (%s)', test_filter) INTO m;
        IF m < 2 THEN
            RAISE EXCEPTION 'the training split has a single class: every other class fell into the test split'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use test_sampling => ''stratified'' or a smaller test_size.';
        END IF;
    END IF;

    -- the features before preprocessing, in table order: the numeric x, and each category's
    -- encoding fitted on the training rows (as SQL over its g column)
    xi := 0; gi := 0; b := 0;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        IF col ->> 'kind' = 'category' THEN
            gi := gi + 1;
            fitted := ml_stack._fit_category_encoding(col ->> 'name', gi, (col ->> 'numeric_order')::boolean,
                CASE WHEN jsonb_typeof(col -> 'enum_labels') = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(col -> 'enum_labels')) END,
                coalesce(preprocess -> (col ->> 'name'), '{}'), category_defaults, task, classes, class_labels,
                format('NOT (%s)', test_filter));
            width := jsonb_array_length(fitted -> 'names');
            IF width = 0 THEN
                RAISE EXCEPTION 'column "%" has a single value in the training rows: one-hot, it is no feature', col ->> 'name'
                    USING ERRCODE = 'invalid_parameter_value', HINT = format('Leave it out with exclude => ARRAY[%L].', col ->> 'name');
            END IF;
            FOR j IN 1 .. width LOOP
                raw := raw || ml_stack._category_joined_feature_sql(fitted -> 'encoding', gi, j);
            END LOOP;
            IF fitted -> 'encoding' ->> 'method' = 'ordinal' AND (fitted -> 'rules' -> 0 ->> 'impute') IS NULL THEN
                unseen := unseen || jsonb_build_object('x', cardinality(raw), 'name', col ->> 'name');
            END IF;
            joins := joins || ml_stack._category_join_sql(fitted -> 'encoding', gi);
            f_names := f_names || ARRAY(SELECT jsonb_array_elements_text(fitted -> 'names'));
            f_types := f_types || array_fill(col ->> 'type', ARRAY[width::integer]);
            rules := rules || (fitted -> 'rules');
            layout := jsonb_set(layout, ARRAY[b::text], (col - 'enum_labels' - 'numeric_order')
                                || jsonb_build_object('width', width, 'encoding', fitted -> 'encoding'));
        ELSIF col ->> 'kind' <> 'text' THEN
            FOR j IN 1 .. coalesce((col ->> 'width')::integer, 1) LOOP
                xi := xi + 1;
                raw := raw || format('x%s', xi);
                f_names := f_names || names[xi];
                f_types := f_types || types[xi];
                rules := rules || jsonb_build_array(coalesce(preprocess -> src[xi], '{}'));
            END LOOP;
        END IF;
        b := b + 1;
    END LOOP;
    names := f_names; types := f_types;
    p := cardinality(raw);
    IF gi > 0 THEN
        -- the rows again, with x1 .. xp the features in table order, the encoded ones computed:
        -- the engines, the metrics and the comparison read raw feature j as column xj
        IF p + cardinality(g_sel) + cardinality(t_sel) > 1500 THEN
            RAISE EXCEPTION 'the encoded categories make % features, more than a table of the training rows holds', p
                USING ERRCODE = 'program_limit_exceeded',
                      HINT = 'Encode the widest categorical columns with {"encode": "target"} (one feature each) instead of one-hot.';
        END IF;
        EXECUTE format('CREATE TEMPORARY TABLE _ml_stack_encoded ON COMMIT DROP AS SELECT t.r, t.y, t.k%s%s%s '
                       'FROM pg_temp._ml_stack_rows AS t%s',
                       (SELECT string_agg(format(', %s AS x%s', CASE WHEN raw[e.q] ~ '^x\d+$' THEN 't.' || raw[e.q] ELSE raw[e.q] END, e.q),
                                          '' ORDER BY e.q) FROM generate_series(1, p) AS e(q)),
                       (SELECT string_agg(format(', t.g%s', e.q), '' ORDER BY e.q) FROM generate_series(1, cardinality(g_sel)) AS e(q)),
                       (SELECT string_agg(format(', t.t%s', e.q), '' ORDER BY e.q) FROM generate_series(1, cardinality(t_sel)) AS e(q)),
                       joins);
        DROP TABLE pg_temp._ml_stack_rows;
        ALTER TABLE pg_temp._ml_stack_encoded RENAME TO _ml_stack_rows;
        raw := ARRAY(SELECT format('x%s', e.q) FROM generate_series(1, p) AS e(q));
        -- an ordinal category of the test rows that the training rows lack has no value: no
        -- prediction, so a test row the metrics would silently leave out
        FOR col IN SELECT value FROM jsonb_array_elements(unseen) LOOP
            EXECUTE format('SELECT count(*) FROM pg_temp._ml_stack_rows WHERE (%s) AND x%s IS NULL', test_filter, col ->> 'x') INTO nonnull;
            IF nonnull > 0 THEN
                RAISE EXCEPTION 'ordinal column "%" has % test rows whose category the training rows lack: they would have no value',
                                col ->> 'name', nonnull
                    USING ERRCODE = 'null_value_not_allowed',
                          HINT = format('Add an impute rule for unseen categories, e.g. {"%s": {"encode": "ordinal", "impute": "median"}}, '
                                        'or give the whole order: {"encode": {"ordinal": [...]}}.', col ->> 'name');
            END IF;
        END LOOP;
    END IF;

    -- statistics of the raw features and the label on the training rows
    EXECUTE format(
        'SELECT ARRAY[count(*)::float8, avg(y), stddev_pop(y), min(y), max(y)%s] FROM pg_temp._ml_stack_rows WHERE NOT (%s)',
        (SELECT string_agg(format(', count(%1$s), avg(%1$s), stddev_pop(%1$s), min(%1$s), max(%1$s)', raw[i]), '')
         FROM generate_series(1, p) AS i),
        test_filter)
    INTO stats;

    -- preprocessing of each feature: x' = (coalesce(x, impute) - shift) / scale
    FOR j IN 1 .. p LOOP
        nn := stats[6 + (j - 1) * 5]; m := stats[7 + (j - 1) * 5]; sd := stats[8 + (j - 1) * 5];
        mn := stats[9 + (j - 1) * 5]; mx := stats[10 + (j - 1) * 5];
        nnull := stats[1] - nn;
        rule := rules -> (j - 1);
        IF jsonb_typeof(rule) <> 'object' THEN
            RAISE EXCEPTION 'preprocess rule for "%" must be an object', names[j]
                USING ERRCODE = 'invalid_parameter_value', HINT = '{"impute": "mean", "scale": "standard"}';
        END IF;
        FOR key IN SELECT jsonb_object_keys(rule) LOOP
            IF key NOT IN ('impute', 'scale') THEN
                RAISE EXCEPTION 'unknown preprocess rule "%" for column "%"', key, names[j]
                    USING ERRCODE = 'invalid_parameter_value', HINT = 'The rules are "impute" and "scale".';
            END IF;
        END LOOP;
        impute := rule ->> 'impute';
        scale := coalesce(rule ->> 'scale', 'preserve');
        IF nn = 0 AND impute IS DISTINCT FROM 'zero' THEN
            RAISE EXCEPTION 'feature "%" is NULL in every training row', names[j]
                USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave the column out in a view.';
        END IF;
        iv := CASE impute
                  WHEN 'mean' THEN m
                  WHEN 'min' THEN mn
                  WHEN 'max' THEN mx
                  WHEN 'zero' THEN 0
                  WHEN 'median' THEN NULL
                  ELSE NULL END;
        IF impute = 'median' THEN
            EXECUTE format('SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY %s) FROM pg_temp._ml_stack_rows WHERE NOT (%s)',
                           raw[j], test_filter) INTO iv;
        ELSIF impute = 'mode' THEN
            -- the most frequent training value; of tied values, the smallest (scikit-learn's SimpleImputer)
            EXECUTE format('SELECT mode() WITHIN GROUP (ORDER BY %s) FROM pg_temp._ml_stack_rows WHERE NOT (%s)',
                           raw[j], test_filter) INTO iv;
        ELSIF impute IS NOT NULL AND impute NOT IN ('mean', 'min', 'max', 'zero') THEN
            RAISE EXCEPTION 'unknown impute rule "%" for column "%"', impute, names[j]
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Use "mean", "median", "mode", "min", "max" or "zero".';
        END IF;
        -- statistics after imputation (what a scaler after an imputer would see)
        IF nnull > 0 AND iv IS NOT NULL THEN
            mm := (nn * coalesce(m, 0) + nnull * iv) / stats[1];
            sd := sqrt(greatest((nn * (coalesce(sd, 0) ^ 2 + (coalesce(m, 0) - mm) ^ 2) + nnull * (iv - mm) ^ 2) / stats[1], 0));
            m := mm;
            mn := least(mn, iv); mx := greatest(mx, iv);
        END IF;
        CASE scale
            WHEN 'preserve' THEN shift := 0; spread := 1;
            WHEN 'none' THEN shift := 0; spread := 1;
            WHEN 'standard' THEN shift := m; spread := CASE WHEN sd > 0 THEN sd ELSE 1 END;
            WHEN 'min_max' THEN shift := mn; spread := CASE WHEN mx > mn THEN mx - mn ELSE 1 END;
            WHEN 'max_abs' THEN shift := 0;
                               spread := CASE WHEN greatest(abs(mn), abs(mx)) > 0 THEN greatest(abs(mn), abs(mx)) ELSE 1 END;
            WHEN 'robust' THEN
                -- scikit-learn's RobustScaler: the median and the interquartile range of the training
                -- values (after imputation, as a scaler after an imputer sees them)
                EXECUTE format('SELECT q[2], q[3] - q[1] FROM (SELECT percentile_cont(ARRAY[0.25, 0.5, 0.75]) '
                               'WITHIN GROUP (ORDER BY %s) AS q FROM pg_temp._ml_stack_rows WHERE NOT (%s)) AS s',
                               CASE WHEN iv IS NULL THEN raw[j] ELSE format('coalesce(%s, %s::float8)', raw[j], iv) END,
                               test_filter) INTO shift, spread;
                spread := CASE WHEN spread > 0 THEN spread ELSE 1 END;
            ELSE
                RAISE EXCEPTION 'unknown scale rule "%" for column "%"', scale, names[j]
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'Use "standard", "min_max", "max_abs", "robust" or "preserve".';
        END CASE;
        transform := transform || jsonb_build_object('impute', iv, 'shift', shift, 'scale', spread);
        x_expr := x_expr || format('((%s - %s::float8) / %s::float8)',
                                   CASE WHEN iv IS NULL THEN raw[j]
                                        ELSE format('coalesce(%s, %s::float8)', raw[j], iv) END,
                                   shift, spread);
        x_mean := x_mean || ((m - shift) / spread);
        x_std := x_std || (coalesce(sd, 0) / spread);
        features := features || jsonb_build_object(
            'name', names[j], 'type', types[j], 'count', nn, 'nulls', (stats[1] - nn)::bigint,  -- train rows, like the other statistics
            'mean', stats[7 + (j - 1) * 5], 'std', stats[8 + (j - 1) * 5],
            'min', stats[9 + (j - 1) * 5], 'max', stats[10 + (j - 1) * 5]);
    END LOOP;

    -- text blocks: the transformer of each vectorize rule; counts and tfidf fit their
    -- vocabulary on the training rows (a vectorizer named <project>.<column>, one version per model)
    b := 0;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) WHERE value ->> 'kind' = 'text' LOOP
        b := b + 1;
        rule := preprocess -> (col ->> 'name');
        FOR key IN SELECT jsonb_object_keys(rule) LOOP
            IF key NOT IN ('vectorize', 'options') THEN
                RAISE EXCEPTION 'unknown preprocess rule "%" for text column "%"', key, col ->> 'name'
                    USING ERRCODE = 'invalid_parameter_value',
                          HINT = 'A text column takes "vectorize" and its "options", e.g. {"vectorize": "hashing", "options": {"dims": 256}}.';
            END IF;
        END LOOP;
        IF jsonb_typeof(rule -> 'vectorize') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'the vectorize rule of column "%" must name a transformer', col ->> 'name'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"vectorize": "hashing"}, "tfidf" or "counts".';
        END IF;
        IF rule ->> 'vectorize' IN ('counts', 'tfidf') THEN
            vid := ml_stack._fit_vocabulary(
                format('%s.%s', project_name, col ->> 'name'), rule ->> 'vectorize', rule -> 'options',
                format('SELECT t%s FROM pg_temp._ml_stack_rows WHERE NOT (%s)', b, test_filter),
                jsonb_build_object('project', project_name, 'relation', rel::text, 'column', col ->> 'name',
                                   'training_rows', n - ntest));
            spec := ml_stack._vectorizer_spec(vid);  -- a statement of its own: it must see the new vocabulary
        ELSE
            spec := ml_stack._resolve_transformer(rule ->> 'vectorize', rule -> 'options');
            IF spec ->> 'kind' = 'python' THEN
                -- a model of ml_stack_python: its dimensions from its listing (the engines embed the rows)
                EXECUTE 'SELECT t.dims FROM ml_stack._python_transformers() AS t WHERE t.name = $1'
                    INTO width USING spec ->> 'name';
                spec := spec || jsonb_build_object('dims', width);
            END IF;
        END IF;
        blocks := blocks || jsonb_build_array(jsonb_build_object('column', col ->> 'name', 't', b, 'spec', spec,
                                                                 'dims', (spec ->> 'dims')::integer));
    END LOOP;
    -- where x and the blocks sit among the model's features (table order)
    b := 0;
    FOR col IN SELECT value FROM jsonb_array_elements(layout) LOOP
        IF col ->> 'kind' = 'text' THEN
            blocks := jsonb_set(blocks, ARRAY[b::text, 'offset'], to_jsonb(pos));
            columns := columns || jsonb_build_array((col - 'ci') || jsonb_build_object(
                'offset', pos, 'width', blocks -> b -> 'dims', 'transformer', blocks -> b -> 'spec'));
            pos := pos + (blocks -> b ->> 'dims')::integer;
            b := b + 1;
        ELSE
            columns := columns || jsonb_build_array((col - 'ci') || jsonb_build_object(
                'offset', pos, 'width', coalesce((col ->> 'width')::integer, 1)));
            FOR j IN 1 .. coalesce((col ->> 'width')::integer, 1) LOOP
                pos := pos + 1;
                x_positions := x_positions || pos;
            END LOOP;
        END IF;
    END LOOP;

    RETURN jsonb_build_object(
        'n', n, 'skipped', total - n, 'train_rows', n - ntest, 'test_rows', ntest,
        'test_size', test_size, 'test_sampling', test_sampling, 'seed', seed,
        'test_filter', test_filter, 'train_filter', format('NOT (%s)', test_filter),
        'features', features,
        'label', jsonb_build_object('name', y_column_name, 'type', y_att.typ::text, 'class_labels', to_jsonb(class_labels),
                                    'mean', stats[2], 'std', stats[3], 'min', stats[4], 'max', stats[5],
                                    'class_counts', class_counts),
        'classes', to_jsonb(classes),
        'x', to_jsonb(x_expr), 'x_mean', to_jsonb(x_mean), 'x_std', to_jsonb(x_std),
        'transform', transform,
        'blocks', blocks, 'columns', columns, 'x_positions', to_jsonb(x_positions), 'num_features', pos);
END
$$;
