-- 0.2.0: compiled models have functions of several signatures; _create_model_function replaces _create_predictor.
DROP FUNCTION IF EXISTS ml_stack._create_predictor(text, text, text);
