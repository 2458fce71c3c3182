{#-
  Fails with every row of the model for which `expression` (a boolean SQL expression over the
  model's columns) is not true. Rows where it evaluates to null fail as well.
-#}
{% test expression_is_true(model, expression, column_name=none) %}

select *

from {{ model }}

where not coalesce({{ expression }}, false)

{% endtest %}
