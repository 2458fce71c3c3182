{#-
  Fails with one row per duplicated key when the combination of `combination_of_columns` is not
  unique in the model (the dbt_utils test of that name, written here: no dbt packages in this project).
-#}
{% test unique_combination(model, combination_of_columns) %}

{%- set key_columns = combination_of_columns | join(', ') %}

select
    {{ key_columns }},
    count(*) as n_rows

from {{ model }}

group by {{ key_columns }}

having count(*) > 1

{% endtest %}
